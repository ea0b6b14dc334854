"""What each speed-up of utils/fast buys, one row each, measured side by side in one process.

    python benchmarks/speed_pieces.py [--rounds 5] [--steps 6] [--threads 2]

The benchmark model of speed.py (d_model 256, 3+3 layers, vocab 8000, batch 64 x 24 with
padding). Training pieces (packed_rows, fast_dropout, written_down_loss, fused_adam) are timed
on forward + backward + Adam steps, decoding pieces (packed_output_layer, growing_kv_cache) on
greedy decoding of 64 sources x 32 new tokens. Each row compares the readable path
(SpeedUps.none(), what --no-fast runs) with the same path plus that one piece; the last rows
compare none with all. Variants take turns within each round, so a slow spell of the machine
hits them all; the medians are reported. Prints the CPU's flags first: compare ratios from one
run, not absolute times across machines. Writes benchmarks/results/speed_pieces.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.speed_models import BATCH, VOCAB, make_batch, ours, training_loss  # noqa: E402
from utils.fast import SpeedUps  # noqa: E402

TRAINING = ("packed_rows", "fast_dropout", "written_down_loss", "fused_adam")
DECODING = ("packed_output_layer", "growing_kv_cache")


def cpu_flags() -> str:
    """The vector and matrix extensions this CPU has (what makes bf16 or AVX-512 kernels possible)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor() or "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


def _variants(pieces) -> dict[str, SpeedUps]:
    variants = {"readable": SpeedUps.none()}
    variants |= {name: SpeedUps.only(name) for name in pieces}
    variants["all"] = SpeedUps()
    return variants


def time_training(rounds: int, steps: int) -> dict[str, float]:
    """ms per optimizer step for the readable path, each training piece alone, and all of them."""
    torch.manual_seed(0)
    start = ours(speed=SpeedUps.none()).state_dict()
    batches = [make_batch(i) for i in range(steps)]
    runs = {}
    for label, speed in _variants(TRAINING).items():
        model = ours(speed=speed).train()
        model.load_state_dict(start)
        opt = torch.optim.Adam(
            model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=speed.fused_adam
        )

        def step(model=model, opt=opt, speed=speed) -> None:
            for src, tgt_in, tgt_out in batches:
                loss = training_loss("ours", model, src, tgt_in, tgt_out, speed)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        step()  # warm-up
        runs[label] = step
    return _round_robin(runs, rounds, per_call=steps)


def time_decoding(rounds: int) -> dict[str, float]:
    """ms per greedy decode (64 sources, exactly 32 new tokens)."""
    from pytorch_version.decoding import greedy_decode

    torch.manual_seed(0)
    start = ours(speed=SpeedUps.none()).state_dict()
    src, _, _ = make_batch(99)
    runs = {}
    for label, speed in _variants(DECODING).items():
        model = ours(speed=speed).eval()
        model.load_state_dict(start)
        model.config.eos_id = VOCAB + 1  # an id never produced: every decode makes 32 tokens

        def decode(model=model) -> None:
            with torch.no_grad():
                greedy_decode(model, src, 32)

        decode()
        runs[label] = decode
    return _round_robin(runs, rounds, per_call=1)


def _round_robin(runs: dict, rounds: int, per_call: int) -> dict[str, float]:
    times = {label: [] for label in runs}
    for _ in range(rounds):
        for label, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[label].append((time.perf_counter() - start) / per_call * 1000)
    return {label: statistics.median(t) for label, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6, help="training steps per timed call")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU flags: {cpu_flags()}; {args.threads} threads, torch {torch.__version__}")
    training, decoding = time_training(args.rounds, args.steps), time_decoding(args.rounds)
    rows = []
    for pieces, times, what in ((TRAINING, training, f"training step, batch {BATCH}"),
                                (DECODING, decoding, "greedy decode, 64 x 32")):  # fmt: skip
        for name in (*pieces, "all"):
            base, with_it = times["readable"], times[name]
            rows.append({"piece": name, "measured_on": what, "readable_ms": base, "with_ms": with_it,
                         "speedup": base / with_it})  # fmt: skip
    print(f"\n{'piece':22} {'measured on':28} {'readable ms':>12} {'with it ms':>11} {'speed-up':>9}")
    for r in rows:
        print(f"{r['piece']:22} {r['measured_on']:28} {r['readable_ms']:12.1f} {r['with_ms']:11.1f} "
              f"{r['speedup']:8.2f}x")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "speed_pieces.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu_flags": cpu_flags(), "threads": args.threads, "rows": rows}, indent=2))
    print(f"\nwritten {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
