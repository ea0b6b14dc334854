"""The lab bench: one toy task, fixed batches, a small model, and a training loop that records what
the experiments compare (the loss at each step, the gradient norm of each layer, held-out accuracy,
confidence and calibration).

Every variant of an experiment starts from the same seed and trains on the same batches in the same
order, so the one setting the experiment changes is the only difference between its runs. The
readable model trains alone: the speed-ups of utils/fast know only the paper's settings.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pytorch_version.families import model_for
from utils.data.tasks import PairDataset, collate, make_toy_task, tokenizer_for_task
from utils.fast import SpeedUps
from utils.runtime.config import ModelConfig
from utils.training.recipe import ADAM_BETAS, ADAM_EPS

# a GPT's own defaults (ModelShape's arch_defaults, which only RunConfig applies)
GPT_SHAPE = {"norm_first": True, "positions": "rotary", "activation": "gelu", "init": "gpt2"}
ECE_BINS = 10  # calibration error: confidence bins of width 0.1 (Guo et al. 2017 use 15)


@dataclass(frozen=True)
class Bench:
    """The ground every experiment stands on: task, model size, batches and seed."""

    task: str = "reversal"  # the default job's task: its cross-attention learns an anti-diagonal
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    ffn_size: int = 256
    batch_size: int = 32
    steps: int = 200  # optimizer steps of each variant
    eval_size: int = 256  # held-out examples, sources never seen in training
    max_len: int = 10  # source lengths 3..max_len characters
    seed: int = 0

    def scaled(self, **changes) -> Bench:
        return dataclasses.replace(self, **changes)


@dataclass
class Run:
    """One trained variant: its model, its loss at every step, and the gradient norms it recorded."""

    model: torch.nn.Module
    losses: list[float]
    gradient_norms: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> layer -> norm
    rates: list[float] = field(default_factory=list)

    def final_loss(self, last: int = 20) -> float:
        """Mean training loss over the last `last` steps (a diverged run: inf)."""
        tail = self.losses[-last:]
        return sum(tail) / len(tail) if all(math.isfinite(x) for x in tail) else math.inf


class Lab:
    """The bench's data and tokenizer, built once; `train` runs one variant on it."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.tokenizer = tokenizer_for_task(bench.task)
        needed = min(bench.steps * bench.batch_size, 8000)  # small steps runs cycle over fewer examples
        train, held_out = make_toy_task(bench.task, needed, bench.eval_size, bench.seed, 3, bench.max_len)
        self.batches = {arch: self._batches(train, arch) for arch in ("transformer", "gpt")}
        self.held_out = {
            arch: self._batches(held_out, arch, len(held_out))[0] for arch in ("transformer", "gpt")
        }

    def _batches(self, pairs, arch: str, size: int | None = None) -> list[dict]:
        """Fixed batches of the pairs in their (random) order; a GPT reads each source as its prompt."""
        data = PairDataset(pairs, self.tokenizer, source_eos=arch == "transformer")
        size = size or self.bench.batch_size
        return [
            collate([data[j] for j in range(i, min(i + size, len(data)))]) for i in range(0, len(data), size)
        ]

    def config(self, arch: str = "transformer", **switches) -> ModelConfig:
        """The bench's model config of one family, with the experiment's switches; no dropout, so
        a difference between two runs is the switch's."""
        b, tok = self.bench, self.tokenizer
        shape = {**(GPT_SHAPE if arch == "gpt" else {}), **switches}
        return ModelConfig(
            arch=arch,
            hidden_size=shape.pop("hidden_size", b.hidden_size),
            num_layers=shape.pop("num_layers", b.num_layers),
            num_heads=b.num_heads,
            ffn_size=shape.pop("ffn_size", b.ffn_size),
            dropout=0.0,
            src_vocab_size=tok.src_vocab_size,
            tgt_vocab_size=tok.tgt_vocab_size,
            pad_id=tok.pad_id,
            bos_id=tok.bos_id,
            eos_id=tok.eos_id,
            **shape,
        )

    def model(self, cfg: ModelConfig, init: Callable | None = None) -> torch.nn.Module:
        """A fresh model from the bench's seed; `init(model)` re-initialises it (experiment 3)."""
        torch.manual_seed(self.bench.seed)
        model = model_for(cfg)
        if init is not None:
            init(model)
        return model

    def train(
        self,
        cfg: ModelConfig,
        rate: Callable[[int], float],
        *,
        init=None,
        smoothing: float = 0.0,
        loss: Callable | None = None,
        grads_at: tuple[int, ...] = (0,),
    ) -> Run:
        """`steps` Adam steps (the paper's betas) at learning rate `rate(step)`; the gradient norms of
        each layer are recorded at the steps `grads_at` (0: at initialisation, before any update).
        `loss(logits, targets)` replaces the label-smoothed cross-entropy (the lab's focal loss)."""
        model = self.model(cfg, init)
        model.train()
        step_logits = SpeedUps.none().labelled_logits(model, cfg.pad_id)
        optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=ADAM_BETAS, eps=ADAM_EPS)
        run = Run(model, [])
        batches = self.batches[cfg.arch]
        for step in range(self.bench.steps):
            batch = batches[step % len(batches)]
            labelled = model.labelled(batch["tgt_out"])
            logits = step_logits(batch["src"], batch["tgt_in"], labelled)
            targets = batch["tgt_out"][labelled]
            value = (
                loss(logits, targets) if loss else F.cross_entropy(logits, targets, label_smoothing=smoothing)
            )
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            if step in grads_at:
                run.gradient_norms[step] = layer_gradient_norms(model)
            for group in optimizer.param_groups:
                group["lr"] = rate(step + 1)  # step 1 is the first update, as LambdaLR counts after step 0
            run.rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            run.losses.append(value.item())
        model.eval()
        return run

    def evaluate(self, run: Run) -> dict[str, float]:
        """Teacher-forced held-out scores: token accuracy, exact match (every token of a row right),
        mean confidence (the top probability), calibration error (ECE) and the loss in nats per token."""
        model = run.model
        batch = self.held_out[model.config.arch]
        with torch.no_grad():
            logits = model(batch["src"], batch["tgt_in"]).float()
        labelled = model.labelled(batch["tgt_out"])
        probs = logits.softmax(-1)
        confidence, guess = probs.max(-1)
        right = (guess == batch["tgt_out"]) & labelled
        rows_right = (right | ~labelled).all(dim=1)
        conf, hit = confidence[labelled], right[labelled].float()
        nll = F.cross_entropy(logits[labelled], batch["tgt_out"][labelled]).item()
        return {
            "token_accuracy": hit.mean().item(),
            "exact_match": rows_right.float().mean().item(),
            "confidence": conf.mean().item(),
            "ece": calibration_error(conf, hit),
            "nll": nll,
        }


def calibration_error(confidence: torch.Tensor, hit: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error: over confidence bins, the token share times |accuracy - confidence|."""
    which = (confidence * bins).long().clamp(max=bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.float().mean().item() * abs(
                hit[inside].mean().item() - confidence[inside].mean().item()
            )
    return total


LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.")


def layer_gradient_norms(model: torch.nn.Module) -> dict[str, float]:
    """The L2 norm of the gradient of each layer's parameters, {"encoder.0": ..., "decoder.1": ...},
    the encoder's first, in the order the input passes through them."""
    squares: dict[str, float] = {}
    for name, p in model.named_parameters():
        found = LAYER.match(name)
        if found and p.grad is not None:
            key = f"{found[1]}.{found[2]}"
            squares[key] = squares.get(key, 0.0) + p.grad.float().pow(2).sum().item()
    order = lambda key: (key.split(".")[0] != "encoder", int(key.split(".")[1]))
    return {key: math.sqrt(squares[key]) for key in sorted(squares, key=order)}


def constant_after_warmup(peak: float, warmup: int) -> Callable[[int], float]:
    """Linear warm-up to `peak` over `warmup` steps (0: none), then `peak`."""
    return lambda step: peak * min(1.0, step / warmup) if warmup else peak


@dataclass
class Result:
    """What an experiment hands the report: what it shows, which paper it checks, the numbers it
    measured, the sentence of its finding (made from those numbers) and the panels of its figure."""

    title: str
    checks: str  # the paper section or paper whose claim it measures
    shows: str
    numbers: dict
    finding: str
    panels: list = field(default_factory=list)


def rounded(value, digits: int = 4):
    """Numbers for the report: floats to `digits` significant digits, through dicts and lists."""
    if isinstance(value, dict):
        return {str(k): rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else str(value)
    return value


def curve(losses: list[float]) -> tuple[list[int], list[float]]:
    """A loss curve's points for a lines panel: step numbers from 1."""
    return list(range(1, len(losses) + 1)), losses


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf
