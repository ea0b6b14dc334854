"""`--version both`: train the two implementations from the same start and put them side by side.

Both runs use the same data (same seed), the same initial weights (the pytorch model
built as pytorch_version.train.train builds it, converted with the key table), the same
batch order, loss and metric, and the same schedule (noam_schedule; the Trainer's inverse_sqrt; or
the cosine one, the Trainer's cosine_with_min_lr). Any family (--arch): the encoder-decoder, the GPT on a
toy task (exact match) or on a text (--task lm: the same windows, the validation loss), BERT on a
classification (accuracy) or a masked LM (the same masking; the masked tokens' loss) and the ViT.
Writes `<output_dir>/results_comparison/`:
comparison.json, comparison.md and loss_curves.png.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from huggingface_version.alongside import threads_for_halves, train_halves
from huggingface_version.convert import hf_class_for, pytorch_to_hf
from huggingface_version.train import train_huggingface
from pytorch_version.inference import load_for_inference
from pytorch_version.train import build_model, train
from utils.data.tasks import PairDataset, collate, make_toy_task, tokenizer_for_task
from utils.fast.packing import readable_logits
from utils.runtime import precision
from utils.runtime.config import ENCODER_ONLY, STEP_TASKS, RunConfig, resolve_device

logger = logging.getLogger(__name__)

# the final evaluation's numbers comparison.json holds, where the task has them
FINAL_KEYS = ("eval_loss", "eval_token_accuracy", "eval_exact_match", "eval_bits_per_char", "eval_perplexity",
              "eval_accuracy", "eval_masked_accuracy")  # fmt: skip

DIFFERENCES = """\
Same math, different plumbing:

- **Tracing: explicit capture points vs hooks.** pytorch_version spells every step out and
  places named capture points (identity `HookPoint`s) inside its modules; the Hugging Face model
  has none and is observed from outside with `register_forward_hook`
  (huggingface_version/hooks.py), which recomputes the attention scores and weights from the
  captured q, k and mask. Both fill the same cache names, so the same analysis and figures apply.
- **Training: own loop vs Trainer.** pytorch_version owns its loop (forward, loss, backward,
  clip, step, schedule, evaluate, checkpoint); the Hugging Face run hands it to `Seq2SeqTrainer`,
  whose arguments give the paper's Adam (AdamW 0.9/0.98, eps 1e-9, no weight decay) and the Noam
  schedule (`inverse_sqrt` from the peak rate), and changes, in a subclass, only the loss (label
  smoothing over the labelled positions, tokens of the accumulation window), the batch order and
  the evaluation (greedy exact match); metrics and internals are logged through callbacks.
- **Decoding.** pytorch_version has its own greedy and beam search over a `KVCache`;
  the Hugging Face model uses `generate` over an `EncoderDecoderCache`. Greedy outputs are
  identical; beam search ranks finished hypotheses with a different length penalty
  (GNMT ((5+|Y|)/6)^alpha vs |Y|^length_penalty) and keeps finished beams aside instead of in
  the beam (with no length penalty the two agree).
- **Saving.** a `.pt` checkpoint dict vs `save_pretrained` (safetensors, config.json,
  generation_config.json, tokenizer files) loadable with `AutoModelForSeq2SeqLM`.
- **Why the curves differ at all.** the first optimizer step: transformers' `inverse_sqrt` gives it
  the rate 0 where pytorch_version's schedule gives it step 1's (every later step has the same rate).
  With dropout > 0 the two runs draw different dropout masks.
  With dropout 0 they start identical, but float32 rounding differs in the last bit (the loss is
  divided before instead of after the backward pass, kernels sum in different orders) and
  training amplifies such differences over the steps, so the curves drift apart slowly."""

GPT_DIFFERENCES = """\
The GPT (--arch gpt): the Hugging Face model is a causal LM (`TutorialGPTForCausalLM`, trained by the
same trainer's causal subclass, huggingface_version/causal_trainer.py) whose examples are one sequence,
`prompt <s> completion </s>`, with labels -100 on the prompt, as pytorch_version's; it continues a text
with `generate` over a `DynamicCache`, pytorch_version with its own sampling loop over a `KVCache`
(greedy outputs agree; sampled ones draw other random numbers)."""


ENCODER_DIFFERENCES = """\
The encoder-only family (--arch bert, vit): the Hugging Face models (modeling_encoder.py) return
transformers' output classes (`MaskedLMOutput`, `SequenceClassifierOutput`, `ImageClassifierOutput`) with
their loss from `labels` (-100: no label), and are trained by the trainer's encoder subclass
(huggingface_version/encoder_trainer.py) on pytorch_version's own datasets and masked batches; both are
scored by pytorch_version.evaluate_encoder. A saved folder works with `pipeline("fill-mask")`,
`pipeline("text-classification")` or `pipeline("image-classification")`."""


def _pytorch_run_data(cfg: RunConfig):
    """pytorch_version's run data of an encoder-only task (the data decides the labels and special ids)."""
    from pytorch_version.run_data import load_run_data
    from utils.runtime.distributed import World

    return load_run_data(cfg, World(), torch.device("cpu"))


def _text_corpus(cfg: RunConfig):
    from utils.data.lm import load_text_corpus

    return load_text_corpus(cfg.data_file, cfg.val_file, cfg.tokenizer, cfg.vocab_size, cfg.context_length)


def initial_pytorch_model(cfg: RunConfig):
    """The model pytorch_version.train.train(cfg) starts from: same seed, same construction order."""
    if cfg.arch in ENCODER_ONLY:
        data = _pytorch_run_data(cfg)
        torch.manual_seed(cfg.seed)
        return build_model(cfg, data.tokenizer, data.model_fields)
    tokenizer = _text_corpus(cfg).tokenizer if cfg.task == "lm" else tokenizer_for_task(cfg.task)
    torch.manual_seed(cfg.seed)  # train() seeds, then builds data (python RNG only), then the model
    return build_model(cfg, tokenizer)


def _history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _epoch_times(history: list[dict]) -> list[float]:
    elapsed = [r["elapsed_s"] for r in history]
    return [b - a for a, b in zip([0.0, *elapsed[:-1]], elapsed)]


def _first_batch(cfg: RunConfig, examples: int) -> dict[str, torch.Tensor]:
    """The first held-out examples in the pair layout: toy pairs (a GPT's sources without EOS, as it
    reads them), or a language model's first validation windows."""
    if cfg.task == "lm":
        from utils.data.lm import validation_batches

        return next(validation_batches(_text_corpus(cfg).val_ids, cfg.context_length, examples))
    _, eval_pairs = make_toy_task(cfg.task, cfg.train_size, cfg.eval_size, cfg.seed, cfg.min_len, cfg.max_len)
    pairs = PairDataset(eval_pairs[:examples], tokenizer_for_task(cfg.task), source_eos=cfg.arch != "gpt")
    return collate([pairs[i] for i in range(len(pairs))])


@torch.no_grad()
def logit_difference(pt_model, hf_model, cfg: RunConfig, examples: int = 64) -> float:
    """max |logits_pytorch - logits_hf| on the first held-out batch (teacher forcing); a GPT's at the
    positions that predict a token (its padding is no token: nothing reads those rows); an encoder-only
    model's on pytorch_version's probe (a few held-out examples, or masked validation windows)."""
    pt_model, hf_model = pt_model.cpu().eval(), hf_model.cpu().eval()
    if cfg.arch in ENCODER_ONLY:
        from pytorch_version.evaluate_encoder import logits_of

        src = _pytorch_run_data(cfg).probe["src"]
        return (pt_model(src) - logits_of(hf_model, src)).abs().max().item()
    batch = _first_batch(cfg, examples)
    src, tgt_in, pad = batch["src"], batch["tgt_in"], pt_model.config.pad_id
    a = pt_model(src, tgt_in)
    b = readable_logits(hf_model, src, tgt_in, src != pad, tgt_in != pad)
    if cfg.arch == "gpt":
        real = batch["tgt_out"] != pad
        a, b = a[real], b[real]
    return (a - b).abs().max().item()


def plot_loss_curves(pt_history, hf_history, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, history, style in (("pytorch", pt_history, "-"), ("huggingface", hf_history, "--")):
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [r["train_loss"] for r in history], style, marker="o", label=f"{name} train")
        ax.plot(epochs, [r["eval_loss"] for r in history], style, marker="s", label=f"{name} eval")
    ax.set(xlabel="epoch", ylabel="cross-entropy (train: label-smoothed)", title=title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_comparison(cfg: RunConfig) -> dict:
    """Train both versions from the same initial weights and write results_comparison/."""
    if cfg.arch in ENCODER_ONLY:  # refused before the pytorch half trains
        from huggingface_version.encoder_run_data import check_encoder_flags

        check_encoder_flags(cfg)
    device = resolve_device(cfg.device)
    if cfg.precision == "auto":  # both halves alike, so their curves compare (the HF half's may be fp32)
        cfg = precision.resolve(cfg, device, "huggingface")
    out = Path(cfg.output_dir) / "results_comparison"
    out.mkdir(parents=True, exist_ok=True)
    threads = threads_for_halves(cfg, device)
    if threads is not None:  # on a CPU: at once, each on its share of the threads (alongside.py)
        pt_summary, hf_summary = train_halves(cfg, threads)
    else:
        start_model = initial_pytorch_model(cfg)
        pt_summary = train(cfg)
        hf_summary = train_huggingface(cfg, init_from_pytorch=start_model)
    root = Path(cfg.output_dir)
    pt_history = _history(root / "results_pytorch" / "logs" / "metrics.jsonl")
    hf_history = _history(root / "results_huggingface" / "logs" / "metrics.jsonl")

    # the final pytorch weights, converted: the two implementations must agree on them
    folder = root / "results_pytorch" / "checkpoints"
    final = (
        "averaged_model.pt"
        if pt_summary.get("averaged_is_final")
        else f"checkpoint_epoch_{pt_history[-1]['epoch']}.pt"
    )
    trained_pt, _, _ = load_for_inference(folder / final)
    conversion_diff = logit_difference(trained_pt, pytorch_to_hf(trained_pt), cfg)
    trained_hf = hf_class_for(cfg.arch, cfg.task != "mlm").from_pretrained(root / "results_huggingface")
    trained_diff = logit_difference(trained_pt, trained_hf, cfg)

    side = {}
    for name, summary, history in (
        ("pytorch", pt_summary, pt_history),
        ("huggingface", hf_summary, hf_history),
    ):
        times = _epoch_times(history)
        side[name] = {
            "parameters": summary["parameters"],
            "wall_time_s": summary["wall_time_s"],
            "time_per_epoch_s": sum(times) / len(times),
            "final_train_loss": history[-1]["train_loss"],
            **{f"final_{key}": summary["final"][key] for key in FINAL_KEYS if key in summary["final"]},
            "train_loss_per_epoch": [r["train_loss"] for r in history],
            "eval_loss_per_epoch": [r["eval_loss"] for r in history],
        }
    result = {
        "task": cfg.task,
        "arch": cfg.arch,
        "epochs": len(pt_history) if cfg.task in STEP_TASKS else cfg.epochs,  # lm, mlm: rounds
        **({"max_steps": cfg.max_steps} if cfg.task in STEP_TASKS else {}),
        # measured: each half's fingerprint of the weights it started from (None: resumed, not started)
        "same_initial_weights": pt_summary.get("initial_weights") is not None
        and pt_summary.get("initial_weights") == hf_summary.get("initial_weights"),
        "initial_weights": {
            "pytorch": pt_summary.get("initial_weights"),
            "huggingface": hf_summary.get("initial_weights"),
        },
        "pytorch": side["pytorch"],
        "huggingface": side["huggingface"],
        "max_abs_logit_diff_converted": conversion_diff,
        "max_abs_logit_diff_trained_separately": trained_diff,
        "config": cfg.to_dict(),
    }
    (out / "comparison.json").write_text(json.dumps(result, indent=2))
    (out / "comparison.md").write_text(_markdown(result), encoding="utf-8")
    plot_loss_curves(pt_history, hf_history, out / "loss_curves.png", f"pytorch vs huggingface: {cfg.task}")
    key = headline_key(cfg)
    logger.info("comparison: %s pytorch %.4f / huggingface %.4f, converted logits differ by %.1e",
                key.removeprefix("eval_").replace("_", " "), side["pytorch"][f"final_{key}"],
                side["huggingface"][f"final_{key}"], conversion_diff)  # fmt: skip
    return result


def headline_key(cfg: RunConfig) -> str:
    """The final number the comparison leads with: a loss (lm, mlm), accuracy, or exact match."""
    if cfg.task in STEP_TASKS:
        return "eval_loss"
    return "eval_accuracy" if cfg.arch in ENCODER_ONLY else "eval_exact_match"


TABLE_ROWS = (("eval_loss", "final eval loss", ".4f"), ("eval_bits_per_char", "bits per character", ".4f"),
              ("eval_perplexity", "perplexity", ".3f"), ("eval_token_accuracy", "token accuracy", ".2%"),
              ("eval_exact_match", "exact match", ".2%"), ("eval_accuracy", "accuracy", ".2%"),
              ("eval_masked_accuracy", "masked-token accuracy", ".2%"))  # fmt: skip


SAME_FUNCTION = 1e-4  # the largest logit difference float32 rounding explains on these small models


def _markdown(r: dict) -> str:
    pt, hf = r["pytorch"], r["huggingface"]
    unit = "round" if r["task"] in STEP_TASKS else "epoch"
    rows = [
        ("parameters", f"{pt['parameters']:,}", f"{hf['parameters']:,}"),
        (f"time per {unit} (s)", f"{pt['time_per_epoch_s']:.1f}", f"{hf['time_per_epoch_s']:.1f}"),
        ("final train loss (smoothed)", f"{pt['final_train_loss']:.4f}", f"{hf['final_train_loss']:.4f}"),
    ]
    for key, name, form in TABLE_ROWS:
        if f"final_{key}" in pt:
            rows.append((name, format(pt[f"final_{key}"], form), format(hf[f"final_{key}"], form)))
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    length = f"{r['max_steps']} steps" if r["task"] in STEP_TASKS else f"{r['epochs']} epochs"
    family = {"gpt": "GPT", "bert": "BERT", "vit": "ViT"}.get(r.get("arch"), "encoder-decoder")
    extras = {"gpt": GPT_DIFFERENCES, "bert": ENCODER_DIFFERENCES, "vit": ENCODER_DIFFERENCES}
    extra = extras.get(r.get("arch"))
    notes = DIFFERENCES + ("\n\n" + extra if extra else "")
    start = r["initial_weights"]
    if r["same_initial_weights"]:
        began = (
            f"Both started from the same initial weights (fingerprint {start['pytorch']} on each "
            "side) and were given the same batches in the same order (one seed, one data pipeline)."
        )
    elif None in start.values():
        began = (
            "At least one half resumed from a checkpoint, so this run did not see where both started "
            "(fingerprints: pytorch {pytorch}, huggingface {huggingface})."
        ).format(**start)
    else:
        began = (
            "**The two halves started from different weights** (fingerprints: pytorch {pytorch}, "
            "huggingface {huggingface}): their curves do not compare step for step."
        ).format(**start)
    diff = r["max_abs_logit_diff_converted"]
    verdict = ("float32 rounding: the two are the same function" if diff <= SAME_FUNCTION
               else f"more than float32 rounding ({SAME_FUNCTION:g}): the conversion did not reproduce the "
               "model")  # fmt: skip
    return f"""# pytorch_version vs huggingface_version: {r["task"]} ({family}), {length}

{began}

| | pytorch_version | huggingface_version |
|---|---|---|
{table}

**Conversion check.** The trained pytorch weights, converted to the Hugging Face model with
the key table of huggingface_version/convert.py, give logits that differ by at most
**{diff:.1e}** on the same batch ({verdict}). The two separately trained models differ by
{r["max_abs_logit_diff_trained_separately"]:.2e}.

![loss curves](loss_curves.png)

{notes}
"""
