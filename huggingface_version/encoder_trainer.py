"""Training the encoder-only models (BERT, ViT) in the toolkit's trainer: what is the family's own.

TutorialSeq2SeqTrainer (custom_trainer.py) holds the recipe: the label-smoothed loss over the labelled
positions divided by the labels of the accumulation window, the NaN guard, pytorch_version's batch
order, the training loss as pytorch_version reports it. What an encoder-only model changes:

  _targets            the labels themselves: a classifier's (B,) classes, a masked LM's (B, S) original
                      ids where a token was chosen (-100 elsewhere); nothing is shifted, nothing decoded
  _model_inputs       input_ids and attention_mask, or pixel_values
  _labelled_logits    a classifier's (B, C) logits; a masked LM's at the chosen positions only
                      (`logits_to_keep=mask`: the output layer, the largest matmul, runs on ~15% of the rows)
  get_train_dataloader  a masked LM: the rounds of masked windows (run_data.LMRounds over MLMBatches)
  evaluate            pytorch_version.evaluate_encoder's scoring on the HF model (`score`): a classifier's
                      held-out loss and accuracy, a masked LM's loss, accuracy and perplexity over the
                      tokens of the fixed validation masking; the same numbers for the same weights
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from huggingface_version.custom_trainer import TutorialSeq2SeqTrainer


class TutorialEncoderTrainer(TutorialSeq2SeqTrainer):
    """The trainer of a TutorialBertFor... or TutorialViTForImageClassification."""

    def __init__(self, *args, score: Callable[[torch.nn.Module], dict], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._score = score  # model -> {"eval_loss", "eval_accuracy" or the masked ones, "eval_examples"}

    def _targets(self, inputs: dict) -> torch.Tensor:
        return inputs["labels"]

    def _model_inputs(self, model, inputs: dict) -> dict:
        return {k: v for k, v in inputs.items() if k != "labels"}

    def _labelled_logits(self, model, inputs: dict, labelled: torch.Tensor) -> torch.Tensor:
        if labelled.dim() == 2:  # a masked LM: the head on the chosen positions' rows only, (N, V)
            return model(**inputs, logits_to_keep=labelled).logits
        return model(**inputs).logits[labelled]  # a classifier: (B, C), every row a label

    def get_train_dataloader(self) -> DataLoader:
        rounds = self.train_dataset
        if not hasattr(rounds, "rounds_done"):  # a classification: the shuffled dataset, as pytorch_version
            return super().get_train_dataloader()
        rounds.rounds_done = lambda: self.state.global_step // self.args.eval_steps  # asked when resumed
        return DataLoader(rounds, batch_size=None)  # the rounds make the batches themselves

    def score(self, model) -> dict:
        """pytorch_version's held-out metrics of `model` (its examples under "eval_examples")."""
        training = model.training
        try:
            return self._score(model)
        finally:
            model.train(training)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", **gen_kwargs):
        metrics = self.score(self.model)
        self.last_predictions = metrics.pop("eval_examples", [])
        metrics = {k.replace("eval", metric_key_prefix, 1): v for k, v in metrics.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
