"""--checkpoint_average N: the final model is the mean of the last N epochs' weights (paper, section 6.1).

"For the base models, we used a single model obtained by averaging the last 5 checkpoints."
The weights at the end of each of the last epochs wander around a good point, pushed by the
noise of the last updates; their mean sits nearer to it. On the default reversal run the mean
of epochs 4-6 scored 97.4-99.6% exact match where epoch 6 alone scored 93.0-97.4% (README).

The Trainer writes checkpoint-STEP/ at the end of every epoch (save_strategy="epoch"); those
of the last N epochs of this run are averaged, loaded into the model and evaluated once more,
without the callbacks (metrics.jsonl keeps one record per epoch). The model then saved into the
results folder is that average, unless it scores below the last epoch alone. pytorch_version
does the same with its checkpoint_epoch_N.pt files (pytorch_version.evaluate.evaluate_average).
"""

from __future__ import annotations

import logging
from pathlib import Path

from safetensors.torch import load_file

from utils.runtime.config import RunConfig
from utils.training.recipe import mean_weights

logger = logging.getLogger("huggingface_version.train")


def epoch_checkpoints(out: Path, history: list[dict]) -> dict[int, Path]:
    """{epoch: checkpoint folder} of this run's epochs (metrics.jsonl records), whose weights are on
    disk: the Trainer names each checkpoint-STEP after the step its epoch ended on. Folders of other
    runs in the same results folder, and mid-epoch saves of an interrupted run, are never taken."""
    folders = {r["epoch"]: out / f"checkpoint-{r['step']}" for r in history}
    return {e: f for e, f in folders.items() if (f / "model.safetensors").is_file()}


def _load(model, state: dict) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)  # tied weights are stored once
    if unexpected or any(name not in model._tied_weights_keys for name in missing):
        raise RuntimeError(
            f"checkpoint weights do not fit the model: missing {missing}, unexpected {unexpected}"
        )


def average_last_epochs(cfg: RunConfig, out: Path, model, trainer, history: list[dict]) -> dict:
    """Load the mean of the last N epoch checkpoints into `model` and evaluate it; returns
    {"averaged_epochs", "averaged", "averaged_is_final"} for summary.json, or {} when there is
    nothing to average. If the mean scores below the last epoch (early in training, or after
    --stop_at_exact_match), the last epoch's weights go back into `model`: it stays the final one."""
    if cfg.checkpoint_average < 2:
        return {}
    trainer.accelerator.wait_for_everyone()  # under torchrun rank 0 wrote the checkpoints
    ends, last = epoch_checkpoints(out, history), history[-1]
    epochs = [e for e in range(last["epoch"] - cfg.checkpoint_average + 1, last["epoch"] + 1) if e in ends]
    if len(epochs) < 2 or epochs[-1] != last["epoch"]:
        return {}
    states = [load_file(ends[e] / "model.safetensors") for e in epochs]
    _load(model, mean_weights(states))
    if hasattr(trainer, "score"):  # an encoder-only model: pytorch_version.evaluate_encoder's scoring
        output = trainer.score(model)
    else:
        output = trainer.evaluation_loop(
            trainer.get_eval_dataloader(), "averaged checkpoints", metric_key_prefix="eval"
        ).metrics
    metrics = {k: v for k, v in output.items() if k.startswith("eval_") and isinstance(v, float)}
    key = {"translation": "eval_bleu"}.get(cfg.task, "eval_accuracy" if "eval_accuracy" in last else
                                          "eval_exact_match")  # fmt: skip
    better = metrics.get(key, 0.0) >= last[key]
    if not better:
        _load(model, states[-1])
    name = key.removeprefix("eval_").replace("_", " ")
    logger.info("average of epochs %s: %s %.4f (epoch %d alone: %.4f); final model, saved in %s: %s", epochs,
                name, metrics.get(key, float("nan")), epochs[-1], last[key], out,
                "the average" if better else f"epoch {epochs[-1]}")  # fmt: skip
    return {"averaged_epochs": epochs, "averaged": metrics, "averaged_is_final": better}
