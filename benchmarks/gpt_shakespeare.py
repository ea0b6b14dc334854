"""Validation loss against wall time: the GPT on tinyshakespeare, character level, 2 CPU cores.

    python benchmarks/gpt_shakespeare.py --recipe 1min      # the 60-second recipe
    python benchmarks/gpt_shakespeare.py --recipe 15min     # its curve passes 10 minutes too
    python benchmarks/gpt_shakespeare.py --recipe 1min --nanogpt /path/to/nanoGPT   # side by side

Runs `main.py --arch gpt --task lm` on the first 90% / last 10% split of ../shared/data/tinyshakespeare,
with the recipe's flags (printed), reads logs/metrics.jsonl and prints the curve: after each evaluation
the wall time of training so far (evaluations included), the step and the validation loss over the
whole validation split (nats per character). With --nanogpt DIR (a checkout of karpathy/nanoGPT), its
train.py runs next, in the same session, with the CPU recipe of its README (the shared README's first
row), and its curve is printed from its own log lines; nanoGPT estimates its validation loss from
--eval_iters random batches, ours is the whole split. Prints the CPU's flags; writes
benchmarks/results/gpt_shakespeare_<recipe>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed_pieces import cpu_flags  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
COMMON = ["--arch", "gpt", "--task", "lm", "--tokenizer", "char", "--dropout", "0", "--checkpoint_average",
          "0", "--quiet", "--seed", "1337"]  # fmt: skip
RECIPES = {  # main.py flags; the budget stops a slower machine in time (the schedule assumes max_steps)
    "1min": ["--num_layers", "4", "--num_heads", "4", "--hidden_size", "128", "--ffn_size", "512",
             "--context_length", "64", "--batch_size", "12", "--max_steps", "930", "--eval_every", "930",
             "--warmup_steps", "50", "--learning_rate", "3e-3", "--time_budget_minutes", "1"],
    "15min": ["--num_layers", "4", "--num_heads", "4", "--hidden_size", "192", "--ffn_size", "768",
              "--context_length", "128", "--batch_size", "32", "--max_steps", "1900", "--eval_every", "380",
              "--warmup_steps", "100", "--learning_rate", "2e-3", "--bf16", "--time_budget_minutes", "15"],
}  # fmt: skip
NANOGPT_CPU = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=100", "--block_size=64",
               "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
               "--lr_decay_iters=2000", "--dropout=0.0"]  # fmt: skip


def run_ours(flags: list[str], data: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "main.py"), *COMMON, "--data_file", str(data), "--output_dir", tmp,
               *flags]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        results = Path(tmp) / "results_pytorch"
        records = [json.loads(line) for line in (results / "logs" / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((results / "summary.json").read_text())
    curve = [{"seconds": round(r["elapsed_s"], 1), "step": r["step"], "val_loss": round(r["eval_loss"], 4)}
             for r in records]  # fmt: skip
    return {"command": " ".join(["python main.py", *COMMON, "--data_file", str(data), *flags]),
            "parameters": summary["parameters"], "curve": curve, "process_wall_s": round(wall, 1),
            "best_val_loss": min(p["val_loss"] for p in curve)}  # fmt: skip


def run_nanogpt(folder: Path, data: Path) -> dict:
    """nanoGPT's train.py with its README CPU recipe, in a copy of its folder (its prepare.py reads the
    shared input.txt: it downloads only when the file is missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "nanoGPT"
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(".git", "out-*"))
        prepared = copy / "data" / "shakespeare_char"
        shutil.copy(data, prepared / "input.txt")
        subprocess.run([sys.executable, "prepare.py"], check=True, cwd=prepared, stdout=subprocess.DEVNULL)
        start = time.perf_counter()
        cmd = [sys.executable, "-u", "train.py", "config/train_shakespeare_char.py", *NANOGPT_CPU]
        proc = subprocess.Popen(cmd, cwd=copy, stdout=subprocess.PIPE, text=True)
        curve = []
        for line in proc.stdout:
            found = re.match(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", line)
            if found:
                curve.append({"seconds": round(time.perf_counter() - start, 1), "step": int(found[1]),
                              "val_loss": float(found[2])})  # fmt: skip
        proc.wait()
    return {"command": " ".join(["python train.py config/train_shakespeare_char.py", *NANOGPT_CPU]),
            "curve": curve, "best_val_loss": min(p["val_loss"] for p in curve)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="1min")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout to run beside ours")
    parser.add_argument("extra", nargs="*", help="more main.py flags, after --")
    args = parser.parse_args()
    print(cpu_flags())
    result = {
        "recipe": args.recipe,
        "cpu": cpu_flags(),
        "ours": run_ours(RECIPES[args.recipe] + args.extra, args.data),
    }
    if args.nanogpt:
        result["nanogpt"] = run_nanogpt(args.nanogpt, args.data)
    for name in ("ours", "nanogpt"):
        if name in result:
            run = result[name]
            print(f"\n{name}: {run['command']}")
            for point in run["curve"]:
                print(
                    f"  {point['seconds']:7.1f} s  step {point['step']:5d}  val loss {point['val_loss']:.4f}"
                )
    out = ROOT / "benchmarks" / "results" / f"gpt_shakespeare_{args.recipe}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
