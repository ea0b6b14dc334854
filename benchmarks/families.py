"""The two families on the same toy task, measured: results_comparison/families.md.

    python benchmarks/families.py [--task reversal] [--epochs 6] [--output_dir .] [-- more main.py flags]

Trains `main.py --version pytorch --visualize` once with `--arch transformer` (the paper's
encoder-decoder) and once with `--arch gpt` (decoder-only: the source is a prompt, the target its
completion), the same task, data, seed, widths and epochs, and writes the guides' comparison table
with the measured rows: parameters, training time, held-out exact match (and the first epoch that
reached 99%), and the attention patterns the analysis names for each attention of each layer
(utils/observe/attention_patterns.py) on the held-out probe. Also results_comparison/families.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DESIGN = [  # what the two are, from the guides; the measured rows follow
    ("encoder", "N layers read the source, all at once", "none: the decoder stack reads the prompt"),
    ("cross-attention", "each decoder layer attends to the encoder output", "none"),
    ("masks", "padding (encoder); look-ahead + padding (decoder)", "look-ahead + padding, prompt and output"),
    ("position encoding", "sinusoidal table added to the embeddings", "rotary: q and k turned by position"),
    ("use", "translation: a source to a target", "continuing text; a prompt to its completion"),
]  # fmt: skip


def train(arch: str, args, out: Path) -> dict:
    flags = ["--version", "pytorch", "--arch", arch, "--task", args.task, "--epochs", str(args.epochs),
             "--visualize", "--quiet", *args.extra]  # fmt: skip
    cmd = [sys.executable, str(ROOT / "main.py"), *flags, "--output_dir", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    results = out / "results_pytorch"
    summary = json.loads((results / "summary.json").read_text())
    report = json.loads((results / "analysis_report.json").read_text())
    history = [json.loads(line) for line in (results / "logs" / "metrics.jsonl").read_text().splitlines()]
    hit = next((r for r in history if r["eval_exact_match"] >= 0.99), None)
    patterns = {name: dict(collections.Counter(h["pattern"] for h in heads))
                for name, heads in report["attention_patterns"].items()}  # fmt: skip
    return {
        "command": " ".join(["python main.py", *flags]),
        "parameters": summary["parameters"],
        "training_s": round(summary["wall_time_s"], 1),
        "exact_match": summary["final"]["eval_exact_match"],
        "epoch_at_99": hit["epoch"] if hit else None,
        "seconds_at_99": round(hit["elapsed_s"], 1) if hit else None,
        "attention_patterns": patterns,
    }


def _patterns(run: dict) -> str:
    return "<br>".join(f"`{name}`: " + ", ".join(f"{p} x{n}" for p, n in counts.items())
                       for name, counts in run["attention_patterns"].items())  # fmt: skip


def table(task: str, runs: dict) -> str:
    t, g = runs["transformer"], runs["gpt"]
    at_99 = lambda r: f"epoch {r['epoch_at_99']}, {r['seconds_at_99']:.0f} s" if r["epoch_at_99"] else "no"
    rows = [*DESIGN,
            ("parameters (measured)", f"{t['parameters']:,}", f"{g['parameters']:,}"),
            ("training time (measured)", f"{t['training_s']:.0f} s", f"{g['training_s']:.0f} s"),
            (f"{task}: held-out exact match", f"{t['exact_match']:.2%}", f"{g['exact_match']:.2%}"),
            ("first evaluation at >= 99%", at_99(t), at_99(g)),
            ("attention patterns (heads per class)", _patterns(t), _patterns(g))]  # fmt: skip
    lines = [
        "| | encoder-decoder (`--arch transformer`) | decoder-only (`--arch gpt`) |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {a} | {b} |" for name, a, b in rows]
    commands = "\n".join(f"    {runs[a]['command']}" for a in ("transformer", "gpt"))
    intro = f"# The two families on {task}, measured\n\n"
    outro = f"\n\nMeasured by benchmarks/families.py (one process each, this machine):\n\n{commands}\n"
    return intro + "\n".join(lines) + outro


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="reversal", choices=["copy", "reversal", "addition"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--output_dir", type=Path, default=Path("."))
    parser.add_argument("extra", nargs="*", help="more main.py flags, after --")
    args = parser.parse_args()
    folder = args.output_dir / "results_comparison"
    runs = {arch: train(arch, args, args.output_dir / f"families_{arch}") for arch in ("transformer", "gpt")}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "families.json").write_text(json.dumps({"task": args.task, **runs}, indent=2))
    (folder / "families.md").write_text(table(args.task, runs))
    print(table(args.task, runs))


if __name__ == "__main__":
    main()
