"""--checkpoint_average N: the final model is the mean of the last N epochs' weights (paper, section 6.1).

"For the base models, we used a single model obtained by averaging the last 5 checkpoints."
The weights at the end of each of the last epochs wander around a good point, pushed by the
noise of the last updates; their mean sits nearer to it. On the default reversal run the mean
of epochs 4-6 scored 97.4-99.6% exact match where epoch 6 alone scored 93.0-97.4% (README).

The Trainer writes checkpoint-STEP/ at the end of every epoch (save_strategy="epoch"); the
ones whose trainer_state.json says a whole epoch are averaged, loaded into the model and
evaluated once more, without the callbacks (metrics.jsonl keeps one record per epoch). The
model then saved into the results folder is that average. pytorch_version does the same with
its checkpoint_epoch_N.pt files (pytorch_version.evaluate.evaluate_average).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from utils.config import RunConfig

logger = logging.getLogger("huggingface_version.train")


def epoch_checkpoints(out: Path) -> dict[int, Path]:
    """{epoch: checkpoint folder} of the checkpoints written at the end of an epoch."""
    ends = {}
    for folder in out.glob("checkpoint-*"):
        state_file, weights = folder / "trainer_state.json", folder / "model.safetensors"
        if not (state_file.is_file() and weights.is_file()):
            continue
        epoch = json.loads(state_file.read_text(encoding="utf-8")).get("epoch")
        if epoch and float(epoch).is_integer():  # not a mid-epoch save of an interrupted run
            ends[int(epoch)] = folder
    return ends


def average_last_epochs(cfg: RunConfig, out: Path, model, trainer, last: dict) -> dict:
    """Load the mean of the last N epoch checkpoints into `model` and evaluate it; returns
    {"averaged_epochs", "averaged"} for summary.json, or {} when there is nothing to average.
    `last` is the last epoch's metrics record."""
    if cfg.checkpoint_average < 2:
        return {}
    trainer.accelerator.wait_for_everyone()  # under torchrun rank 0 wrote the checkpoints
    ends = epoch_checkpoints(out)
    epochs = [e for e in range(last["epoch"] - cfg.checkpoint_average + 1, last["epoch"] + 1) if e in ends]
    if len(epochs) < 2:
        return {}
    states = [load_file(ends[e] / "model.safetensors") for e in epochs]
    mean = {
        name: torch.stack([s[name].float() for s in states]).mean(0).to(t.dtype)
        for name, t in states[-1].items()
    }
    missing, unexpected = model.load_state_dict(mean, strict=False)  # tied weights are stored once
    if unexpected or any(name not in model._tied_weights_keys for name in missing):
        raise RuntimeError(
            f"checkpoint weights do not fit the model: missing {missing}, unexpected {unexpected}"
        )
    output = trainer.evaluation_loop(
        trainer.get_eval_dataloader(), "averaged checkpoints", metric_key_prefix="eval"
    )
    metrics = {k: v for k, v in output.metrics.items() if k.startswith("eval_") and isinstance(v, float)}
    logger.info("average of epochs %s: exact match %.4f (epoch %d alone: %.4f); it is the model saved in %s",
                epochs, metrics.get("eval_exact_match", float("nan")), epochs[-1], last["eval_exact_match"],
                out)  # fmt: skip
    return {"averaged_epochs": epochs, "averaged": metrics}
