"""Held-out evaluation of the from-scratch model.

Every epoch: teacher-forced loss and token accuracy, and greedy outputs scored by exact
match (toy tasks) and by BLEU and chrF (translation). After training, with --checkpoint_average
N, the average of the last N epochs' checkpoints: on a toy task it is the final model, evaluated
as the epochs are; on translation it is decoded with --beam_size beside the best checkpoint.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import torch

from pytorch_version.decoding import generate
from pytorch_version.families import model_for
from pytorch_version.inference import load_for_inference, translate
from utils.data.tokenizer import tokenizer_from_dict
from utils.runtime.checkpoint import load_checkpoint, save_checkpoint
from utils.runtime.config import CLASSIFY_TASKS, STEP_TASKS, ModelConfig, RunConfig
from utils.training.metrics import exact_match, token_accuracy, translation_scores
from utils.training.recipe import mean_weights, seq2seq_loss
from utils.training.translation_eval import translate_sorted

logger = logging.getLogger(__name__)


def max_new_tokens(cfg: RunConfig, src: torch.Tensor) -> int:
    return cfg.max_length or src.size(1) + 10


def selection_metric(cfg: RunConfig) -> str:
    """The record key that picks best_model.pt: BLEU for translation, exact match for the toy tasks,
    accuracy for a classifier, the validation loss for a language model or a masked LM."""
    keys = {"translation": "eval_bleu", "lm": "eval_loss", "mlm": "eval_loss", "digits": "eval_accuracy"}
    return keys.get(cfg.task, "eval_accuracy" if cfg.task in CLASSIFY_TASKS else "eval_exact_match")


def lower_is_better(cfg: RunConfig) -> bool:
    return selection_metric(cfg) == "eval_loss"


def selection_score(cfg: RunConfig, record: dict) -> float:
    """The selection metric as "higher is better" (a loss counts negated)."""
    value = record[selection_metric(cfg)]
    return -value if lower_is_better(cfg) else value


def _dataset_order(loader, outputs: list) -> list:
    """Outputs in dataset order, for a loader whose batches are not in that order (length-sorted).

    An unshuffled loader yields the same batches every pass, so its batch sampler says which
    example each output belongs to.
    """
    order = [i for batch in loader.batch_sampler for i in batch]
    if order == list(range(len(outputs))):
        return outputs
    assert sorted(order) == list(range(len(outputs))), "evaluation loaders must cover each example once"
    restored = [None] * len(outputs)
    for position, i in enumerate(order):
        restored[i] = outputs[position]
    return restored


@torch.no_grad()
def evaluate(model, loader, tokenizer, references, cfg: RunConfig, device) -> dict[str, float]:
    """Teacher-forced loss and token accuracy, and greedy outputs scored on the whole set."""
    model.eval()
    total_loss, correct, counted, predictions = 0.0, 0, 0, []
    for batch in loader:
        src, tgt_in, tgt_out = (batch[k].to(device) for k in ("src", "tgt_in", "tgt_out"))
        logits = model(src, tgt_in)
        total_loss += seq2seq_loss(logits, tgt_out, tokenizer.pad_id, 0.0).item() * src.size(0)
        c, n = token_accuracy(logits, tgt_out, tokenizer.pad_id)
        correct, counted = correct + c, counted + n
        outputs = generate(model, src, max_new_tokens(cfg, src))
        predictions += [tokenizer.decode(row) for row in outputs.tolist()]
    predictions = _dataset_order(loader, predictions)
    metrics = {
        "eval_loss": total_loss / len(references),
        "eval_token_accuracy": correct / max(counted, 1),
        "eval_exact_match": exact_match(predictions, references),
    }
    if cfg.task == "translation":
        scores = translation_scores(predictions, references)
        metrics |= {f"eval_{k}": scores[k] for k in ("bleu", "lowercase_bleu", "chrf")}
        logger.info("validation (greedy): %s, chrF %.2f", scores["bleu_details"], scores["chrf"])
    return metrics | {"eval_examples": predictions[:3]}


@torch.no_grad()
def evaluate_lm(model, corpus, cfg: RunConfig, device) -> dict:
    """A language model on the whole validation split: the loss in nats per token, bits per character
    and perplexity; and a short sample continuing the validation text's first tokens."""
    from pytorch_version.sampling import sample
    from utils.data.lm import bits_per_character, perplexity, validation_batches

    model.eval()
    total, tokens = 0.0, 0
    for batch in validation_batches(corpus.val_ids, cfg.context_length, 32):
        tgt_in, tgt_out = batch["tgt_in"].to(device), batch["tgt_out"].to(device)
        logits = model(batch["src"].to(device), tgt_in)
        total += seq2seq_loss(logits.float(), tgt_out, corpus.tokenizer.pad_id, 0.0, "sum").item()
        tokens += int((tgt_out != corpus.tokenizer.pad_id).sum())
    loss = total / tokens
    prompt = corpus.val_ids[: min(16, cfg.context_length // 2)].tolist()
    new = sample(model, prompt, min(cfg.max_new_tokens, 120), cfg.do_sample, cfg.temperature, cfg.top_k,
                 cfg.top_p, seed=cfg.seed)  # fmt: skip
    text = corpus.tokenizer.decode(prompt + new)  # printed with the round's line
    return {
        "eval_loss": loss,  # nats per token: the cross-entropy of the next token
        "eval_bits_per_char": bits_per_character(loss, tokens, corpus.val_chars),
        "eval_perplexity": perplexity(loss),
        "eval_examples": [text],
    }


def average_checkpoints(paths: list[Path], target: Path) -> Path:
    """One checkpoint whose weights are the mean of `paths`' weights (Vaswani et al. 2017, section 6.1:
    "averaging the last 5 checkpoints"): a cheap ensemble of the end of training that smooths
    the noise of the last updates. Config and tokenizer come from the last checkpoint."""
    states = [load_checkpoint(p) for p in paths]
    last = states[-1]
    mean = mean_weights([s["model_state"] for s in states])
    model = model_for(ModelConfig.from_dict(last["model_config"]))
    model.load_state_dict(mean)
    save_checkpoint(
        target, model, tokenizer_from_dict(last["tokenizer"]), averaged_from=[Path(p).name for p in paths]
    )
    return target


def averaged_epochs(cfg: RunConfig, folder: Path, history: list[dict]) -> list[int]:
    """The last --checkpoint_average epochs up to the last one trained (also across a resumed run)
    whose checkpoint is on disk."""
    last = history[-1]["epoch"]
    return [e for e in range(last - cfg.checkpoint_average + 1, last + 1)
            if e >= 1 and (folder / f"checkpoint_epoch_{e}.pt").is_file()]  # fmt: skip


def evaluate_average(cfg: RunConfig, out: Path, history: list[dict], evaluate_model, device) -> dict:
    """Toy tasks with --checkpoint_average N >= 2: average the last N epochs' weights into
    checkpoints/averaged_model.pt and evaluate it with `evaluate_model(model)`. Returns
    {"averaged_epochs", "averaged", "averaged_is_final"} for summary.json, or {} when there is
    nothing to average. The average is the final model unless it scores below the last epoch
    (early in training, or after --stop_at_exact_match, the epochs' weights are still far apart)."""
    folder = out / "checkpoints"
    epochs = averaged_epochs(cfg, folder, history) if cfg.checkpoint_average >= 2 else []
    if cfg.task == "translation" or cfg.task in STEP_TASKS or len(epochs) < 2:
        return {}
    path = average_checkpoints(
        [folder / f"checkpoint_epoch_{e}.pt" for e in epochs], folder / "averaged_model.pt"
    )
    metrics = evaluate_model(load_for_inference(path, device, cfg.fast)[0])
    metrics.pop("eval_examples", None)
    key = selection_metric(cfg)  # exact match, or a classifier's accuracy
    better = metrics[key] >= history[-1][key]
    logger.info("average of epochs %s: %s %.4f (epoch %d alone: %.4f), saved as %s; final model: %s",
                epochs, key.removeprefix("eval_"), metrics[key], epochs[-1], history[-1][key], path,
                "the average" if better else f"epoch {epochs[-1]}")  # fmt: skip
    return {"averaged_epochs": epochs, "averaged": metrics, "averaged_is_final": better}


def final_evaluation(cfg: RunConfig, out: Path, eval_pairs, history: list[dict], device) -> dict:
    """Translation: decode the validation set with --beam_size using best_model.pt and (with
    --checkpoint_average N) the average of the last N epoch checkpoints; write each one's
    outputs to val.{name}.hyp.txt and return their scores for summary.json."""
    if cfg.task != "translation":
        return {}
    folder = out / "checkpoints"
    candidates = {"best_model": folder / "best_model.pt"}
    if cfg.checkpoint_average:
        epochs = averaged_epochs(cfg, folder, history)
        paths = [folder / f"checkpoint_epoch_{e}.pt" for e in epochs]
        candidates["averaged_model"] = average_checkpoints(paths, folder / "averaged_model.pt")
        logger.info("averaged the checkpoints of epochs %s into %s", epochs, candidates["averaged_model"])
    sources, references = [s for s, _ in eval_pairs], [t for _, t in eval_pairs]
    results = {}
    for name, path in candidates.items():
        model, tokenizer, _ = load_for_inference(path, device, cfg.fast)
        decode = partial(translate, model, tokenizer, beam_size=cfg.beam_size, alpha=cfg.length_penalty,
                         max_length=cfg.max_length)  # fmt: skip
        hypotheses = translate_sorted(decode, sources, batch_sentences=max(16, 512 // cfg.beam_size))
        (out / f"val.{name}.hyp.txt").write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
        scores = translation_scores(hypotheses, references)
        results[name] = {k: scores[k] for k in ("bleu", "lowercase_bleu", "chrf", "bleu_details")}
        logger.info("validation, %s, beam %d: %s, chrF %.2f", name, cfg.beam_size, scores["bleu_details"],
                    scores["chrf"])  # fmt: skip
    best = max(results, key=lambda name: results[name]["bleu"])
    return {
        "final_translation": {
            "beam_size": cfg.beam_size,
            "length_penalty": cfg.length_penalty,
            "signatures": scores["signatures"],
            **results,
            "best": best,
        }
    }
