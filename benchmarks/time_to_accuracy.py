"""Seconds until held-out greedy exact match reaches a target, per toy task and family, with the defaults.

    python benchmarks/time_to_accuracy.py [--target 0.99] [--max_epochs 30] [--tasks copy reversal]
                                          [--archs transformer gpt]

Runs `main.py --version pytorch --arch A` once per task and family (default flags, early stop at the
target; the GPT reads the source as a prompt and writes the target after it),
reads logs/metrics.jsonl and prints a table; writes benchmarks/results/time_to_accuracy.json.
The time includes the per-epoch evaluation, as a user would wait for it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_task(task: str, target: float, max_epochs: int, extra: list[str], arch: str = "transformer") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "main.py"), "--version", "pytorch", "--arch", arch, "--task", task,
               "--epochs", str(max_epochs), "--stop_at_exact_match", str(target), "--quiet",
               "--output_dir", tmp, *extra]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        results = Path(tmp) / "results_pytorch"
        lines = (results / "logs" / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        params = json.loads((results / "summary.json").read_text())["parameters"]
    hit = next((r for r in records if r["eval_exact_match"] >= target), None)
    return {
        "task": task,
        "arch": arch,
        "reached": hit is not None,
        "seconds": round(hit["elapsed_s"], 1) if hit else None,
        "epochs": hit["epoch"] if hit else None,
        "best_exact_match": max(r["eval_exact_match"] for r in records),
        "seconds_run": round(records[-1]["elapsed_s"], 1),
        "parameters": params,
        "command": " ".join(["python main.py", "--arch", arch, "--task", task, *extra]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--max_epochs", type=int, default=30)
    parser.add_argument("--tasks", nargs="+", default=["copy", "reversal", "addition"])
    parser.add_argument("--archs", nargs="+", default=["transformer", "gpt"])
    parser.add_argument("extra", nargs="*", help="more main.py flags, after --")
    args = parser.parse_args()
    rows = [run_task(t, args.target, args.max_epochs, args.extra, a) for t in args.tasks for a in args.archs]
    print(f"\ntime to {args.target:.0%} held-out exact match (2-core CPU, default flags)")
    print(f"{'task':10} {'family':12} {'params':>8} {'seconds':>8} {'epochs':>7} {'best EM':>8}")
    for r in rows:
        secs = f"{r['seconds']:.0f}" if r["reached"] else f">{r['seconds_run']:.0f}"
        print(f"{r['task']:10} {r['arch']:12} {r['parameters']:>8,} {secs:>8} {r['epochs'] or '-':>7} "
              f"{r['best_exact_match']:>8.2%}")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "time_to_accuracy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"target": args.target, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
