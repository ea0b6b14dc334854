"""A training step of the default model with torch's nn.Dropout vs utils/fast/dropout.py.

    python benchmarks/dropout_step.py [--rounds 6] [--steps 15]

Same model, same batch (64 x 17 -> 18, the reversal task's longest), alternating rounds of
steps with each dropout so that machine noise hits both; prints the median ms per step and
the ratio; writes benchmarks/results/dropout_step.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytorch_version.model import Transformer  # noqa: E402
from utils.fast.dropout import Dropout  # noqa: E402
from utils.runtime.config import RunConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    vocab = 30
    model = Transformer(RunConfig().model_config(vocab, vocab, pad_id=0, bos_id=1, eos_id=2)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)
    src, tgt = torch.randint(3, vocab, (64, 17)), torch.randint(3, vocab, (64, 18))
    ours = [m for m in model.modules() if isinstance(m, Dropout)]

    def step() -> None:
        logits = model(src, tgt[:, :-1])
        torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), tgt[:, 1:].reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {"nn.Dropout": [], "fast_dropout": []}
    for _ in range(3):
        step()
    for _ in range(args.rounds):
        for name, cls in (("nn.Dropout", torch.nn.Dropout), ("fast_dropout", Dropout)):
            for m in ours:
                m.__class__ = cls
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps * 1000)
    result = {name: round(statistics.median(t), 2) for name, t in times.items()}
    result["ratio"] = round(result["nn.Dropout"] / result["fast_dropout"], 3)
    result["threads"] = torch.get_num_threads()
    print(f"ms per training step: nn.Dropout {result['nn.Dropout']}, fast_dropout {result['fast_dropout']}"
          f" -> {result['ratio']}x")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "dropout_step.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
