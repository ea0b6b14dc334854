"""Training the decoder-only GPT (TutorialGPTForCausalLM) in the toolkit's trainer: what is the family's own.

TutorialSeq2SeqTrainer (custom_trainer.py) holds the recipe: the label-smoothed loss over the labelled
positions divided by the tokens of the accumulation window, the NaN guard, pytorch_version's batch
order, the training loss as pytorch_version reports it. What a GPT changes:

  _targets              position t is scored on token t + 1 (the labels shifted left by one), -100 on
                        the prompt, its BOS and the padding: the loss is on the completion only
  _model_inputs         the one sequence and its attention mask; there is no decoder input
  _labelled_logits      `logits_to_keep=mask`: the output layer runs on the labelled rows only (no packed
                        twin of a GPT yet, see utils.fast.why_not_packed; it takes one when there is)
  prediction_step       teacher-forced loss and token accuracy, and greedy completions of the prompts
                        (source BOS, left-padded) by `generate`: exact match, as pytorch_version.evaluate

and for a language model (`corpus`, --task lm):

  get_train_dataloader  the rounds of random windows (run_data.LMRounds)
  evaluate              the validation loss over the whole split in nats per token, bits per character
                        and perplexity (`evaluate_lm_hf`: pytorch_version.evaluate.evaluate_lm's numbers
                        on the same weights), and a sample
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from huggingface_version.custom_trainer import TutorialSeq2SeqTrainer
from huggingface_version.generation import continue_ids, sampling_settings
from utils.fast import why_not_packed

logger = logging.getLogger("huggingface_version.train")


class TutorialCausalLMTrainer(TutorialSeq2SeqTrainer):
    """The trainer of a TutorialGPTForCausalLM: a toy task's prompt -> completion, or a language model."""

    def __init__(self, *args, corpus=None, run_config=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.corpus = corpus  # a language model's utils.data.lm.TextCorpus; None on a toy task
        self.run_config = run_config  # a language model's: the context, the sample's settings

    def _targets(self, inputs: dict) -> torch.Tensor:
        labels, width = inputs["labels"], inputs["input_ids"].size(1)
        shifted = labels[:, 1:]  # a language model's labels are one longer: every position has a target
        return F.pad(shifted, (0, width - shifted.size(1)), value=-100)

    def _model_inputs(self, model, inputs: dict) -> dict:
        return {k: v for k, v in inputs.items() if k != "labels"}

    def _labelled_logits(self, model, inputs: dict, labelled: torch.Tensor) -> torch.Tensor:
        unwrapped = self.accelerator.unwrap_model(model)
        if self.speed.packed_rows and unwrapped is model and why_not_packed(model) is None:
            step = self.speed.labelled_logits(model, model.config.pad_token_id)
            ids = inputs["input_ids"]
            with self.accelerator.autocast():
                return step(ids[:, :0], ids, labelled, None, inputs.get("attention_mask"))
        return model(**inputs, use_cache=False, logits_to_keep=labelled).logits

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        inputs = self._prepare_inputs(inputs)
        model_inputs, targets = self._teacher_forcing(model, inputs)
        with torch.no_grad():
            logits = model(**model_inputs, use_cache=False).logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
            if prediction_loss_only:
                return loss.detach(), None, None
            self._add_token_counts(logits, targets)
            completions = self._complete(inputs)
        return loss.detach(), completions, inputs["labels"]

    def _complete(self, inputs: dict) -> torch.Tensor:
        """Greedy completions (B, new tokens) of the batch's prompts: each row's real tokens without a
        label (source, BOS), left-padded; up to the longest source + 10 tokens, as pytorch_version."""
        ids, labels = inputs["input_ids"], inputs["labels"]
        prompt = inputs["attention_mask"].bool() & (labels == -100)
        rows = [row[keep] for row, keep in zip(ids, prompt)]
        width = max(len(r) for r in rows)
        pad = self.model.config.pad_token_id
        batch = torch.full((len(rows), width), pad, dtype=ids.dtype, device=ids.device)
        attention = torch.zeros_like(batch)
        for i, row in enumerate(rows):
            batch[i, width - len(row) :], attention[i, width - len(row) :] = row, 1
        new_tokens = self.max_new_tokens or width - 1 + 10
        out = self.model.generate(input_ids=batch, attention_mask=attention, max_new_tokens=new_tokens,
                                  do_sample=False, num_beams=1)  # fmt: skip
        return out[:, width:]

    # --- a language model -------------------------------------------------------------------

    def get_train_dataloader(self) -> DataLoader:
        if self.corpus is None:
            return super().get_train_dataloader()
        rounds = self.train_dataset  # run_data.LMRounds: it makes the batches itself
        rounds.rounds_done = lambda: self.state.global_step // self.args.eval_steps  # asked when resumed
        return DataLoader(rounds, batch_size=None)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", **gen_kwargs):
        if self.corpus is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix, **gen_kwargs)
        training = self.model.training
        metrics = evaluate_lm_hf(self.model, self.corpus, self.run_config, metric_key_prefix)
        self.model.train(training)
        self.last_predictions = metrics.pop(f"{metric_key_prefix}_examples")
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


@torch.no_grad()
def evaluate_lm_hf(model, corpus, cfg, prefix: str = "eval") -> dict:
    """A TutorialGPTForCausalLM on the whole validation split of `corpus`: the loss in nats per token
    (summed over every predicted token, then divided by their number), bits per character and
    perplexity, as pytorch_version.evaluate.evaluate_lm computes them; and a sample continuing the
    validation text's first tokens (its text under `{prefix}_examples`)."""
    from utils.data.lm import bits_per_character, perplexity, validation_batches

    model.eval()
    pad = corpus.tokenizer.pad_id
    total, tokens = 0.0, 0
    for batch in validation_batches(corpus.val_ids, cfg.context_length, 32):
        x, y = batch["tgt_in"].to(model.device), batch["tgt_out"].to(model.device)
        logits = model(input_ids=x, attention_mask=(x != pad).long(), use_cache=False).logits
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=pad,
                                 reduction="sum").item()  # fmt: skip
        tokens += int((y != pad).sum())
    loss = total / tokens
    prompt = corpus.val_ids[: min(16, cfg.context_length // 2)].tolist()
    never = (corpus.tokenizer.eos_id, corpus.tokenizer.unk_id)  # the text has neither
    new = continue_ids(model, prompt, min(cfg.max_new_tokens, 120), sampling_settings(cfg), seed=cfg.seed,
                       stop_at_eos=False, never=never)  # fmt: skip
    text = corpus.tokenizer.decode(prompt + new)
    logger.info("sample: %r", text)
    return {
        f"{prefix}_loss": loss,  # nats per token: the cross-entropy of the next token
        f"{prefix}_bits_per_char": bits_per_character(loss, tokens, corpus.val_chars),
        f"{prefix}_perplexity": perplexity(loss),
        f"{prefix}_examples": [text],
    }
