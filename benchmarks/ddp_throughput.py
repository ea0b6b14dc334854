"""Training throughput (target tokens/s) of 1 process vs N processes under torchrun, same global batch.

    python benchmarks/ddp_throughput.py [--processes 2] [--train_size 4000] [--epochs 3] [--global_batch 64]

On the CPU the cores are shared out: OMP_NUM_THREADS = cores for one process, cores / N for each
of N. Runs `main.py --version pytorch` with the default model on the reversal task, reads
logs/metrics.jsonl and times the epochs after the first (warm-up); the per-epoch evaluation is
kept tiny (16 examples) and subtracted out as far as the log allows. Prints the ratio and the
all-reduce traffic per step that scaling to 8 GPUs would cost; writes
benchmarks/results/ddp_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(processes: int, args) -> dict:
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(cores // processes, 1))}
    flags = ["--version", "pytorch", "--task", "reversal", "--device", "cpu", "--eval_size", "16", "--quiet",
             "--train_size", str(args.train_size), "--epochs", str(args.epochs),
             "--batch_size", str(args.global_batch // processes)]  # fmt: skip
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                     "--master_addr=127.0.0.1", f"--master_port={free_port()}"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        command = [*launcher, str(ROOT / "main.py"), *flags, "--output_dir", tmp]
        subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        results = Path(tmp) / "results_pytorch"
        records = [json.loads(line) for line in (results / "logs" / "metrics.jsonl").read_text().splitlines()]
        parameters = json.loads((results / "summary.json").read_text())["parameters"]
    from utils.data.tasks import make_toy_task

    train, _ = make_toy_task("reversal", args.train_size, 16, 42)
    tokens_per_epoch = sum(len(t) + 1 for _, t in train)  # target tokens, EOS included
    seconds = records[-1]["elapsed_s"] - records[0]["elapsed_s"]  # epochs 2..E, after warm-up
    return {
        "processes": processes,
        "threads_per_process": int(env["OMP_NUM_THREADS"]),
        "batch_size_per_process": args.global_batch // processes,
        "tokens_per_s": round(tokens_per_epoch * (len(records) - 1) / seconds),
        "parameters": parameters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--train_size", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--global_batch", type=int, default=64)
    args = parser.parse_args()
    one, many = run(1, args), run(args.processes, args)
    ratio = many["tokens_per_s"] / one["tokens_per_s"]
    params = one["parameters"]
    grad_bytes = 4 * params  # float32 gradients
    # a ring all-reduce sends and receives 2 (N-1)/N of the gradient bytes per process and step
    ring = {n: round(2 * (n - 1) / n * grad_bytes) for n in (2, 8)}
    for r in (one, many):
        print(f"{r['processes']} process(es) x {r['threads_per_process']} thread(s), batch "
              f"{r['batch_size_per_process']} each: {r['tokens_per_s']:,} target tokens/s")  # fmt: skip
    print(f"ratio {args.processes} vs 1: {ratio:.2f}x")
    print(
        f"default model: {params:,} parameters = {grad_bytes / 1e6:.2f} MB of float32 gradients; "
        f"ring all-reduce per process and step: {ring[2] / 1e6:.2f} MB (2 GPUs), "
        f"{ring[8] / 1e6:.2f} MB (8 GPUs)"
    )
    out = ROOT / "benchmarks" / "results" / "ddp_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"runs": [one, many], "ratio": ratio, "gradient_bytes": grad_bytes, "ring_allreduce_bytes": ring}
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
