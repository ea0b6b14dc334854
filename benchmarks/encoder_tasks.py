"""Held-out accuracy and time of every encoder-only task, with each task's defaults, in one run.

    python benchmarks/encoder_tasks.py [--data_file ../shared/data/tinyshakespeare/input.txt]
                                       [--seeds 0,1,2] [--only digits,majority]

Each row is `python main.py --version pytorch --arch ... --task ...` with nothing else but the seed:
    palindrome, sorted, majority, brackets   BERT classifiers ([CLS] pooling), held-out accuracy
    digits                                   the ViT on sklearn's 8x8 digits (target: >= 97% in 60 s)
    mlm                                      BERT's masked LM on --data_file: masked-token accuracy
    palindrome from mlm                      the palindrome classifier started from the mlm checkpoint
                                             (--init_from): what pre-training on text buys it
Prints the CPU's flags and a table; writes benchmarks/results/encoder_tasks.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed_pieces import cpu_flags  # noqa: E402

TASKS = {
    "palindrome": ["--arch", "bert", "--task", "palindrome"],
    "sorted": ["--arch", "bert", "--task", "sorted"],
    "majority": ["--arch", "bert", "--task", "majority"],
    "brackets": ["--arch", "bert", "--task", "brackets"],
    "digits": ["--arch", "vit", "--task", "digits"],
    "mlm": ["--arch", "bert", "--task", "mlm"],
}


def run(args: list[str], out: Path) -> dict:
    command = [sys.executable, str(ROOT / "main.py"), "--version", "pytorch", "--quiet", "--output_dir",
               str(out), *args]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "results_pytorch" / "summary.json").read_text())
    history = [json.loads(line) for line in (out / "results_pytorch" / "logs" / "metrics.jsonl").open()]
    key = "eval_masked_accuracy" if "eval_masked_accuracy" in summary["final"] else "eval_accuracy"
    first_97 = next((r["elapsed_s"] for r in history if r.get(key, 0) >= 0.97), None)
    return {"accuracy": summary["final"][key], "wall_s": summary["wall_time_s"], "time_to_97": first_97,
            "parameters": summary["parameters"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_file", default=str(ROOT.parent / "shared/data/tinyshakespeare/input.txt"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--only", default="", help="comma-separated rows (default: all)")
    parser.add_argument("--work", default="/tmp/encoder_tasks")
    args = parser.parse_args()
    print(cpu_flags())
    rows = [r for r in (*TASKS, "palindrome from mlm") if not args.only or r in args.only.split(",")]
    results: dict[str, list[dict]] = {}
    for seed in args.seeds.split(","):
        for row in rows:
            out = Path(args.work) / f"{row.replace(' ', '_')}_{seed}"
            if row == "palindrome from mlm":
                pretrained = Path(args.work) / f"mlm_{seed}" / "results_pytorch/checkpoints/best_model.pt"
                flags = [*TASKS["palindrome"], "--init_from", str(pretrained)]
            else:
                flags = TASKS[row] + (["--data_file", args.data_file] if row == "mlm" else [])
            result = run([*flags, "--seed", seed], out)
            results.setdefault(row, []).append({"seed": int(seed), **result})
            print(
                f"{row:22} seed {seed}: accuracy {result['accuracy']:.4f} in {result['wall_s']:.0f}s"
                + (f" (97% at {result['time_to_97']:.0f}s)" if result["time_to_97"] else ""),
                flush=True,
            )
    path = ROOT / "benchmarks" / "results" / "encoder_tasks.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cpu": cpu_flags(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
