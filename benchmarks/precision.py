"""bfloat16 against float32, side by side: what --precision auto weighs (utils/runtime/precision.py).

    python benchmarks/precision.py [--rounds 5] [--threads 2]

The workloads of benchmarks/utilisation.py (each family's training step as the toolkit trains it, with
its speed-ups, float32_attention among them, and greedy decoding of the two decoders), and the default
run's own (`python main.py`: reversal, d 128), 20 of its training steps on its real batches, whose
packed rows change shape every step. Each is built twice from the same seed: once in float32, once
under CPU bfloat16 autocast. Rounds alternate the two; the medians and their ratio are printed with
the CPU's flags, the 2048^3 matmul peak of each format and, per training workload, what
--precision auto takes for a model that wide on this CPU (utils/runtime/precision.py), so the rule can
be checked against the measurement. Writes benchmarks/results/precision.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.speed_pieces import cpu_flags  # noqa: E402
from benchmarks.utilisation import peak, workloads  # noqa: E402
from utils.runtime import precision  # noqa: E402

WIDTHS = {"transformer training": 256, "gpt training": 256, "bert training": 128, "vit training": 128,
          "default run's training (20 steps)": 128}  # fmt: skip


def default_run_steps(bf16: bool, steps: int = 20):
    """20 training steps of `python main.py`'s model on its first 20 batches, as train.py makes them."""
    from pytorch_version.families import build_model
    from pytorch_version.run_data import load_run_data
    from utils.fast import SpeedUps
    from utils.runtime.config import RunConfig
    from utils.runtime.distributed import World
    from utils.training.recipe import optimizer_and_schedule

    cfg = RunConfig(eval_size=20, quiet=True)
    data = load_run_data(cfg, World(), torch.device("cpu"))
    batches = [b for _, b in zip(range(steps), data.train_loader)]
    torch.manual_seed(0)
    model = build_model(cfg, data.tokenizer, data.model_fields)
    optimizer, _ = optimizer_and_schedule(cfg, model, 1000, True)
    speed = SpeedUps.from_flag(True)
    step, loss_sum_of = speed.labelled_logits(model, model.config.pad_id), speed.loss_sum()

    def run():
        for b in batches:
            labelled = model.labelled(b["tgt_out"])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = step(b["src"], b["tgt_in"], labelled)
            loss_sum_of(logits.float(), b["tgt_out"][labelled], cfg.label_smoothing).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run, sum(int(model.labelled(b["tgt_out"]).sum()) for b in batches), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flags = cpu_flags()
    peaks = {"float32": peak(torch.float32, args.rounds), "bfloat16": peak(torch.bfloat16, args.rounds)}
    units = precision.bf16_units()
    print(
        f"CPU flags: {flags}; {args.threads} threads; torch {torch.__version__}; bf16 units: {units or None}"
    )
    print(f"matmul peak (2048^3): float32 {peaks['float32'] / 1e9:.0f} GFLOP/s, bfloat16 "
          f"{peaks['bfloat16'] / 1e9:.0f} GFLOP/s ({peaks['bfloat16'] / peaks['float32']:.2f}x)")  # fmt: skip
    loads = {bf16: workloads(argparse.Namespace(bf16=bf16)) for bf16 in (False, True)}
    for bf16 in (False, True):
        loads[bf16]["default run's training (20 steps)"] = default_run_steps(bf16)
    times = {(name, bf16): [] for name in loads[False] for bf16 in (False, True)}
    for name in loads[False]:
        for bf16 in (False, True):
            loads[bf16][name][0]()  # warm-up
    for _ in range(args.rounds):
        for name in loads[False]:
            for bf16 in (False, True):
                start = time.perf_counter()
                loads[bf16][name][0]()
                times[name, bf16].append(time.perf_counter() - start)
    rows = []
    for name, (_, tokens, _) in loads[False].items():
        fp32_s, bf16_s = (statistics.median(times[name, bf16]) for bf16 in (False, True))
        rows.append({"workload": name, "fp32_ms": fp32_s * 1e3, "bf16_ms": bf16_s * 1e3,
                     "fp32_tokens_per_s": tokens / fp32_s, "bf16_tokens_per_s": tokens / bf16_s,
                     "bf16_speedup": fp32_s / bf16_s, "auto": auto(name)})  # fmt: skip
    print("\n| workload | float32 ms | bfloat16 ms | float32 tokens/s | bfloat16 tokens/s | bf16 / fp32 "
          "| auto |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['fp32_ms']:.1f} | {r['bf16_ms']:.1f} | "
              f"{r['fp32_tokens_per_s']:,.0f} | {r['bf16_tokens_per_s']:,.0f} | "
              f"{r['bf16_speedup']:.2f}x | {r['auto']} |")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "precision.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu_flags": flags, "threads": args.threads, "bf16_units": units,
                               "peaks": peaks, "rows": rows}, indent=2))  # fmt: skip


def auto(name: str) -> str:
    """--precision auto's choice for a pytorch_version run of this workload's width on this CPU."""
    if name not in WIDTHS:
        return ""  # decoding: auto decides training only
    return precision.choose("auto", torch.device("cpu"), WIDTHS[name]).name


if __name__ == "__main__":
    main()
