#!/usr/bin/env bash
# The GPU check: one command on a machine with a CUDA GPU, meant to take under 8 minutes on one
# H100-class card (each step also has a time limit, below). Not yet run on a GPU: none has been lent.
#
#     bash benchmarks/gpu_check.sh        # from anywhere; it finds the repository from its own path
#
# Prints the GPU's name and the torch / CUDA versions, then runs and times (absolute seconds):
#   gpu tests        pytest -m cuda tests/gpu (tiny runs of every path on --device cuda, CPU-vs-CUDA logits)
#   main job         python main.py --version both --device cuda (the default job: reversal, 6 epochs)
#   fp16 (hf)        one epoch of --version huggingface --fp16 (the Trainer's autocast + loss scaling)
#   bf16 (pytorch)   one epoch of --version pytorch --bf16 (torch.autocast, bfloat16)
#   speed benchmark  benchmarks/speed.py --steps 5 --repeats 1: CPU ONLY. speed.py has no --device
#                    (its models, batches, timers and peak-RSS figures are the CPU's); it is run so its
#                    numbers come from this machine too, not as a GPU measurement
#   multi30k epoch   benchmarks/translation_multi30k.py with the recipe's shapes, -- --device cuda --epochs 1
#                    (data: $MULTI30K_DIR, else ../shared/data/multi30k or shared/data/multi30k; skipped
#                    if none of those holds train.de)
# Everything is written into one mktemp -d folder (its path is printed; it is kept for reading).
# speed.py and translation_multi30k.py also write their JSON to benchmarks/results/: a copy of each goes
# into the temporary folder, and a file that was there before is put back as it was.
# A failed step does not stop the others; the exit code is 1 if any failed, 2 without a CUDA GPU.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -x "$ROOT/transformer_env/bin/python" ]]; then
    PY="$ROOT/transformer_env/bin/python"
else
    PY="$(command -v python3 || echo python3)"
fi

if ! has_cuda="$("$PY" -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null)"; then
    echo "gpu_check.sh: $PY cannot import torch; nothing was run" >&2
    exit 2
fi
if [[ "${has_cuda##*$'\n'}" != "True" ]]; then
    echo "gpu_check.sh: no CUDA GPU here (torch.cuda.is_available() is False); nothing was run" >&2
    exit 2
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
RESULTS="$ROOT/benchmarks/results"
CHECK_START="$(date +%s.%N)"
echo "gpu_check.sh: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on ${HOSTNAME:-this machine}, everything into $TMP"
"$PY" - <<'EOF' | tee "$TMP/machine.txt"
import platform

import torch

props = torch.cuda.get_device_properties(0)
print(f"GPU: {torch.cuda.get_device_name(0)}")
print(f"{props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}, "
      f"{torch.cuda.device_count()} visible (the check uses cuda:0)")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"bf16 supported: {torch.cuda.is_bf16_supported()}; Python {platform.python_version()}")
EOF
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/nvidia-smi: /' \
        | tee -a "$TMP/machine.txt" || true
fi
GPU_NAME="$(sed -n 's/^GPU: //p' "$TMP/machine.txt")"

NAMES=()
SECONDS_TAKEN=()
OUTCOMES=()
FAILED=0

seconds_since() {  # seconds from the `date +%s.%N` stamp $1 to now, one decimal
    awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

record() {  # record NAME SECONDS OUTCOME
    NAMES+=("$1")
    SECONDS_TAKEN+=("$2")
    OUTCOMES+=("$3")
}

step() {  # step NAME LIMIT_S COMMAND...: runs it with its output in $TMP/NAME.log, timed; never exits
    local name="$1" limit="$2"
    shift 2
    local log="$TMP/${name//[^A-Za-z0-9]/_}.log" start rc took
    echo
    echo "=== $name (at most ${limit}s), log: $log"
    echo "    $*"
    start="$(date +%s.%N)"
    set +e
    if command -v timeout >/dev/null 2>&1; then
        timeout --kill-after=15 "$limit" "$@" >"$log" 2>&1
    else
        "$@" >"$log" 2>&1
    fi
    rc=$?
    set -e
    took="$(seconds_since "$start")"
    if [[ $rc -eq 0 ]]; then
        echo "    ok in ${took}s; last lines:"
        tail -n 4 "$log" | sed 's/^/    | /'
        record "$name" "$took" "ok"
    else
        [[ $rc -eq 124 || $rc -eq 137 ]] && rc="$rc: past ${limit}s"
        echo "    FAILED (exit $rc) after ${took}s; last lines:"
        tail -n 30 "$log" | sed 's/^/    | /'
        record "$name" "$took" "FAILED (exit $rc)"
        FAILED=1
    fi
}

set_aside() {  # set_aside FILE: keep a copy of benchmarks/results/FILE, which the next step overwrites
    rm -f "$TMP/$1.before"
    if [[ -f "$RESULTS/$1" ]]; then cp -p "$RESULTS/$1" "$TMP/$1.before"; fi
}

put_back() {  # put_back FILE: the step's FILE into $TMP, the earlier one (if any) back in its place
    if [[ -f "$RESULTS/$1" ]]; then cp "$RESULTS/$1" "$TMP/$1"; fi
    if [[ -f "$TMP/$1.before" ]]; then
        cp -p "$TMP/$1.before" "$RESULTS/$1"
    else
        rm -f "$RESULTS/$1"
    fi
}

# (a) every test marked `cuda`
step "gpu tests" 240 "$PY" -m pytest -m cuda -q tests/gpu --basetemp "$TMP/pytest" \
    -o cache_dir="$TMP/pytest_cache"

# (b) the default job, on the GPU
step "main job" 300 "$PY" main.py --version both --device cuda --output_dir "$TMP/both"

# (c) autocast training steps: float16 (the Trainer's GradScaler) and bfloat16
SMALL=(--device cuda --epochs 1 --train_size 4000 --eval_size 200 --quiet)
step "fp16 (hf)" 150 "$PY" main.py --version huggingface --fp16 "${SMALL[@]}" --output_dir "$TMP/fp16"
step "bf16 (pytorch)" 150 "$PY" main.py --version pytorch --bf16 "${SMALL[@]}" --output_dir "$TMP/bf16"

# (d) the speed benchmark: CPU only (see the top of this file), shortened
set_aside speed.json
step "speed benchmark (cpu)" 300 "$PY" benchmarks/speed.py --steps 5 --repeats 1
put_back speed.json

# (e) one epoch of the translation recipe on the GPU (the recipe's --device cpu is overridden)
MULTI30K=""
for dir in "${MULTI30K_DIR:-}" "$ROOT/../shared/data/multi30k" "$ROOT/shared/data/multi30k"; do
    if [[ -n "$dir" && -f "$dir/train.de" ]]; then
        MULTI30K="$(cd "$dir" && pwd)"
        break
    fi
done
if [[ -n "$MULTI30K" ]]; then
    set_aside translation_multi30k.json
    step "multi30k epoch" 300 "$PY" benchmarks/translation_multi30k.py --data_dir "$MULTI30K" \
        --time_budget_minutes 5 --output_dir "$TMP/multi30k" -- --device cuda --epochs 1
    put_back translation_multi30k.json
else
    echo
    echo "=== multi30k epoch: skipped, no Multi30k copy (set MULTI30K_DIR to a folder with train.de)"
    record "multi30k epoch" "-" "skipped (no data)"
fi

echo
echo "gpu_check.sh on $GPU_NAME: seconds per step (wall clock, absolute)"
printf '  %-24s %9s  %s\n' "step" "seconds" "result"
for i in "${!NAMES[@]}"; do
    printf '  %-24s %9s  %s\n' "${NAMES[$i]}" "${SECONDS_TAKEN[$i]}" "${OUTCOMES[$i]}"
done
printf '  %-24s %9s\n' "total" "$(seconds_since "$CHECK_START")"
echo "logs and outputs: $TMP"
if [[ $FAILED -ne 0 ]]; then
    echo "gpu_check.sh: a step failed (see its log above)" >&2
    exit 1
fi
