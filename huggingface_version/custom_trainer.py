"""Training the Hugging Face model with the paper's recipe inside Seq2SeqTrainer.

What transformers does itself, from the arguments huggingface_version/train.py gives it
(`training_arguments`): the paper's Adam (optim adamw_torch[_fused], betas 0.9/0.98, eps 1e-9, no weight
decay), the Noam schedule (lr_scheduler_type inverse_sqrt, warmup_steps, the peak as learning_rate),
gradient clipping, checkpoints, resuming, DDP under torchrun, mixed precision and wandb (report_to).

What the subclass adds, each because transformers has no setting for it:
  compute_loss          label-smoothed cross-entropy (section 5.4) over the labelled positions only
                        (packed rows or logits_to_keep: see the method), summed and divided by the
                        tokens of the accumulation window (get_batch_samples counts them); the plain
                        mean in evaluation
  training_step         a NaN/inf loss drops its window's gradients (utils.runtime.resilience.NonFiniteGuard)
  get_train_dataloader  the same batches in the same order as pytorch_version.train (a
                        DistributedSampler, also under torchrun; with --max_tokens:
                        utils.data.batching.TokenBatchSampler, its share of them under torchrun)
  prediction_step       greedy decoding with source length + 10 new tokens, and teacher-forced
                        token accuracy, as pytorch_version.train.evaluate
  compute_metrics       exact match, and for translation BLEU and chrF (utils.training.metrics)
  log                   the training loss as pytorch_version reports it (mean of the batch means)

The family's part is two small methods, `_targets` (what each position is scored on) and
`_model_inputs` (what the model reads besides); the decoder-only GPT's trainer (causal_trainer.py)
overrides those, its evaluation and, for a language model, the batches. The callbacks that log, stop
and watch the run are in callbacks.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import Seq2SeqTrainer

from huggingface_version.resume import ResumableSampler
from utils.data.batching import TokenBatchSampler
from utils.fast import SpeedUps
from utils.runtime.config import RunConfig
from utils.runtime.distributed import EpochSampler, World, sampler, token_batches
from utils.runtime.resilience import NonFiniteGuard
from utils.training.metrics import exact_match, translation_scores


class TutorialSeq2SeqTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer plus what transformers lacks: a training step over packed rows (the labelled
    positions only) with label smoothing normalised by the accumulation window's tokens, the NaN guard,
    pytorch_version's batch order, and greedy exact-match / BLEU evaluation with token accuracy. The
    optimizer and the schedule are transformers' own (see huggingface_version.arguments.training_arguments).
    """

    # compute_loss divides by the tokens of the whole accumulation window (see get_batch_samples),
    # so the Trainer must not divide again by the number of batches
    loss_is_scaled_for_ga = True
    guard = NonFiniteGuard(0)  # replaced in __init__: NaN/inf losses skip the step, K in a row stop training
    _bad_step = -1  # the optimizer step whose window had a NaN/inf loss (its gradients are dropped)

    def __init__(
        self,
        *args,
        label_smoothing: float = RunConfig.label_smoothing,  # the defaults of main.py's flags
        max_new_tokens: int = 0,
        references: list[str] | None = None,
        translation: bool = False,
        max_tokens: int = 0,
        max_nonfinite_steps: int = RunConfig.max_nonfinite_steps,
        speed: SpeedUps | None = None,
        lengths: list[tuple[int, int]] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.speed = speed or SpeedUps()  # utils/fast: which speed-ups the training step takes
        self.guard = NonFiniteGuard(max_nonfinite_steps)
        self.label_smoothing = label_smoothing
        self.max_new_tokens = max_new_tokens  # 0: source length + 10, as pytorch_version
        self.references = references
        self.translation = translation  # score outputs with BLEU and chrF too
        self.max_tokens = max_tokens  # > 0: batches of similar-length examples up to this many tokens
        # (source, target) tokens of each training example as pytorch_version's batching counts them;
        # by default the lengths of input_ids and labels
        self.lengths = lengths
        self.last_predictions: list[str] = []
        self._token_counts = [0, 0]  # teacher-forced (correct, counted) over the current evaluation
        self._batch_losses: list[float] = []  # per-batch mean training losses since the last log
        if references is not None and self.compute_metrics is None:
            self.compute_metrics = self.sequence_metrics

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The batches of one optimizer step and their number of real target tokens."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        return batches, sum(int((self._targets(b) != -100).sum()) for b in batches)

    # the family's part: what each position is scored on, and what the model reads

    def _targets(self, inputs: dict) -> torch.Tensor:
        """(B, T) the token each decoder position must predict, -100 where none: the labels themselves
        (y1 .. yn EOS; the decoder reads BOS y1 .. yn, see _model_inputs)."""
        return inputs["labels"]

    def _model_inputs(self, model, inputs: dict) -> dict:
        """The model's inputs without the labels: the decoder's input built from them, shifted right."""
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if "decoder_input_ids" not in model_inputs:
            unwrapped = self.accelerator.unwrap_model(model)
            labels = inputs["labels"]
            model_inputs["decoder_input_ids"] = unwrapped.prepare_decoder_input_ids_from_labels(labels)
        return model_inputs

    def _teacher_forcing(self, model, inputs: dict) -> tuple[dict, torch.Tensor]:
        """(the model's inputs, the (B, T) targets its logits at each position are scored on)."""
        return self._model_inputs(model, inputs), self._targets(inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Cross-entropy over real target tokens, label-smoothed while training (section 5.4).

        Training: summed over the batch and divided by the tokens of the whole accumulation
        window, as pytorch_version.train does, so `accum` batches of B make the same step as
        one batch of accum * B. Evaluation: the plain mean, without smoothing.

        Not a `compute_loss_func`: transformers calls that with the outputs of a `model(**inputs)` it
        has made already, logits at every position; this step makes the model call itself, to compute
        logits at the labelled positions only (utils/fast's packed twin, or logits_to_keep=mask), and
        transformers has no hook for the call.
        """
        inputs, labels = self._teacher_forcing(model, inputs)  # labels: the targets of each position
        if model.training and num_items_in_batch:
            labelled = labels != -100  # the loss needs logits only where there is a label
            logits = self._labelled_logits(model, inputs, labelled).float()  # (N, V); fp32 under autocast
            outputs = None
            loss_sum = self.speed.loss_sum()(logits, labels[labelled], self.label_smoothing)
            batch_loss = loss_sum.item() / max(int(labelled.sum()), 1)
            state = getattr(self, "state", None)  # None outside trainer.train()
            step, epoch = (state.global_step, int(state.epoch or 0)) if state else (0, 0)
            if self.guard.check(batch_loss, f"optimizer step {step + 1} (epoch {epoch + 1})"):
                self._batch_losses.append(batch_loss)
            else:
                self._bad_step = step
            loss = loss_sum / max(int(num_items_in_batch), 1)
        else:
            outputs = model(**inputs, use_cache=False)
            logits = outputs.logits.reshape(-1, outputs.logits.size(-1))  # (B*T, V)
            loss = F.cross_entropy(logits.float(), labels.reshape(-1), ignore_index=-100)
        return (loss, outputs) if return_outputs else loss

    def _labelled_logits(self, model, inputs: dict, labelled: torch.Tensor) -> torch.Tensor:
        """(N, V) logits of the labelled positions. transformers has no forward on packed rows: in one
        process the step takes utils/fast's twin over the model's own modules (unless --no-fast);
        a wrapped model (DDP under torchrun, DataParallel on several GPUs) must run the step through the
        wrapper's forward, i.e. the model's, with `logits_to_keep`."""
        if self.speed.packed_rows and self.accelerator.unwrap_model(model) is model:
            pad = self.accelerator.unwrap_model(model).config.pad_token_id
            step = self.speed.labelled_logits(model, pad)
            with self.accelerator.autocast():  # accelerate puts --bf16/--fp16 on model.forward only
                return step(inputs["input_ids"], inputs["decoder_input_ids"], labelled,
                            inputs.get("attention_mask"), inputs.get("decoder_attention_mask"))  # fmt: skip
        return model(**inputs, use_cache=False, logits_to_keep=labelled).logits

    def training_step(self, model, inputs, num_items_in_batch=None):
        """The Trainer's step; a window with a NaN/inf loss leaves no gradients, so Adam skips it
        (torch's Adam updates only parameters that have a gradient; the schedule still advances)."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._bad_step == self.state.global_step:
            model.zero_grad(set_to_none=True)
        return loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Report the training loss as pytorch_version does: the mean of the per-batch means.

        (The Trainer's own figure averages per optimizer step; the two differ only with
        gradient accumulation.)"""
        if "loss" in logs and self._batch_losses:
            logs = {**logs, "loss": sum(self._batch_losses) / len(self._batch_losses)}
            self._batch_losses = []
        super().log(logs, *args, **kwargs)

    def get_train_dataloader(self) -> DataLoader:
        """Shuffled batches in pytorch_version.train's order: same seed, same permutation each epoch.

        Under torchrun process r of N reads perm[r::N] (a DistributedSampler, as pytorch_version
        does), so N processes with batch B see the batches one process with batch N x B sees.
        """
        generator = torch.Generator().manual_seed(self.args.seed)
        world = World(self.args.process_index, self.args.world_size)
        lengths = (self.lengths or [(len(x["input_ids"]), len(x["labels"])) for x in self.train_dataset]
                   if self.max_tokens else [])  # fmt: skip
        if self.max_tokens:
            if world.distributed:  # this process's share of (seed, epoch)'s batches
                batches = EpochSampler(token_batches(*zip(*lengths), self.max_tokens, world, self.args.seed))
            else:
                batches = TokenBatchSampler(*zip(*lengths), self.max_tokens, True, generator)
            loader = DataLoader(
                self.train_dataset,
                batch_sampler=ResumableSampler(batches, generator, lambda: self._epochs_done(len(batches))),
                generator=generator,
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
            )
        else:
            order = EpochSampler(sampler(self.train_dataset, world, self.args.seed))  # set by (seed, epoch)
            loader = DataLoader(
                self.train_dataset,
                batch_size=self._train_batch_size,
                sampler=ResumableSampler(
                    order,
                    generator,
                    lambda: self._epochs_done(-(-len(self.train_dataset) // self._train_batch_size)),
                ),
                generator=generator,  # the DataLoader draws its worker base seed from it, as pytorch's does
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
            )
        return loader

    def _epochs_done(self, batches: int) -> int:
        """Whole epochs of `batches` batches behind a resumed run, counted as the Trainer counts them."""
        accum = self.args.gradient_accumulation_steps
        return self.state.global_step // max(batches // accum + bool(batches % accum), 1)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        if self.args.predict_with_generate and not prediction_loss_only:
            gen_kwargs = {**getattr(self, "_gen_kwargs", {}), **gen_kwargs}
            gen_kwargs = {k: v for k, v in gen_kwargs.items() if v is not None}
            if "max_new_tokens" not in gen_kwargs:  # as max_length (it counts BOS): the Trainer fills
                # a default max_length into the generation config, and generate warns when both are set
                new_tokens = self.max_new_tokens or inputs["input_ids"].shape[1] + 10
                gen_kwargs["max_length"] = new_tokens + 1
            if "labels" in inputs:
                self._count_tokens(model, self._prepare_inputs(inputs))
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys, **gen_kwargs)

    @torch.no_grad()
    def _count_tokens(self, model, inputs) -> None:
        """Teacher-forced next-token accuracy over real positions (utils.training.metrics.token_accuracy)."""
        model_inputs, targets = self._teacher_forcing(model, inputs)
        model_inputs.pop("decoder_attention_mask", None)  # the look-ahead mask alone, as generate decodes
        self._add_token_counts(model(**model_inputs, use_cache=False).logits, targets)

    def _add_token_counts(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        real = targets != -100
        self._token_counts[0] += int(((logits.argmax(-1) == targets) & real).sum())
        self._token_counts[1] += int(real.sum())

    def sequence_metrics(self, eval_pred) -> dict[str, float]:
        """Exact match of the greedy outputs against the reference strings, and token accuracy."""
        ids = eval_pred.predictions
        ids = ids[0] if isinstance(ids, tuple) else ids
        # under torchrun accelerate gives every process equally many batches, repeating examples at
        # the end; gathered in order, the first len(references) rows are the evaluation set
        ids = ids[: len(self.references)] if self.references is not None else ids
        # rows are padded with -100 where batches of different lengths were joined
        predictions = [self.processing_class.decode(row[row >= 0], skip_special_tokens=True) for row in ids]
        self.last_predictions = predictions
        correct, counted = self._token_counts
        if torch.distributed.is_initialized():  # under torchrun each process counted its share
            counts = torch.tensor([correct, counted], dtype=torch.float64)
            torch.distributed.all_reduce(counts)
            correct, counted = int(counts[0]), int(counts[1])
        self._token_counts = [0, 0]
        metrics = {
            "token_accuracy": correct / max(counted, 1),
            "exact_match": exact_match(predictions, self.references),
        }
        if self.translation:
            scores = translation_scores(predictions, self.references)
            metrics |= {k: scores[k] for k in ("bleu", "lowercase_bleu", "chrf")}
        return metrics
