"""Each run-control flag changes what a run does: every test here goes red when its flag is ignored.

A flag that is read nowhere still parses, so a test that only runs with it passes; these tests
compare against the run without the flag (weights, epochs in logs/metrics.jsonl, what a spy
received) instead. Where a flag applies to both implementations, both are tested, through
`pytorch_version.train.train`, `huggingface_version.train.train_huggingface` or `main.main`,
in-process on one thread with runs of one or two optimizer steps (well under a second each).
Model internals are being refactored, so only public behaviour is observed: model outputs,
saved weights, the records a run writes, the activation cache of the contract both versions
keep (../shared/DESIGN.md, `run_with_cache`), and calls into torch / transformers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tests.run_control_helpers import (
    RUNS,
    TINY,
    epochs_logged,
    records,
    run_hf,
    same_weights,
)
from utils.runtime.config import RunConfig

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.slow,
]  # slow: a short run of both versions per flag


# ---- --time_budget_minutes --------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["pytorch", "huggingface"])
def test_time_budget_stops_after_the_first_epoch_that_leaves_no_room(version, tmp_path, caplog):
    """A budget of 6e-5 s: after epoch 1 another epoch cannot fit, so 1 of 3 epochs runs."""
    run, _ = RUNS[version]
    with caplog.at_level(logging.INFO):
        folder = run(tmp_path, epochs=3, time_budget_minutes=1e-6)
    assert epochs_logged(folder) == [1]
    assert "another epoch would overrun --time_budget_minutes: stopping" in caplog.text


def test_hf_time_budget_callback_stops_when_the_mean_epoch_would_overrun(tmp_path):
    """MetricsLogCallback feeds out_of_time the run's elapsed time and the epochs done (as pytorch)."""
    import time

    from transformers import TrainerControl, TrainerState

    from huggingface_version.callbacks import MetricsLogCallback
    from utils.runtime.tracking import Tracker

    callback = MetricsLogCallback(Tracker(tmp_path / "metrics.jsonl"), time_budget_minutes=10)
    metrics = {"eval_loss": 1.0, "eval_token_accuracy": 0.8, "eval_exact_match": 0.5}
    control = TrainerControl()
    callback.start = time.perf_counter() - 444  # 7.4 min for 3 epochs: a fourth ends at 9.9 < 10 min
    callback.on_evaluate(None, TrainerState(epoch=3.0, global_step=30), control, metrics=metrics)
    assert not control.should_training_stop  # (counted as 1 epoch, the next would end at 14.8)
    callback.start = time.perf_counter() - 510  # 8.5 min for 3 epochs: a fourth ends at 11.3 > 10
    callback.on_evaluate(None, TrainerState(epoch=3.0, global_step=30), control, metrics=metrics)
    assert control.should_training_stop


# ---- --stop_at_exact_match --------------------------------------------------------------------------
SCRIPTED_EXACT_MATCH = [0.5, 0.95, 0.97, 0.99]  # held-out exact match of epochs 1, 2, 3, 4


@pytest.mark.parametrize("version", ["pytorch", "huggingface"])
def test_stop_at_exact_match_ends_the_run_at_the_first_epoch_reaching_it(version, tmp_path, monkeypatch):
    """Evaluation is scripted to score 0.5, 0.95, ...: with the threshold 0.9, 2 of 4 epochs run."""
    calls = []
    if version == "pytorch":
        import pytorch_version.run_data as run_data

        real = run_data.evaluate  # what the run's RunData.evaluate calls for the toy tasks

        def scripted(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs) | {"eval_exact_match": SCRIPTED_EXACT_MATCH[len(calls) - 1]}

        monkeypatch.setattr(run_data, "evaluate", scripted)
    else:
        from huggingface_version.custom_trainer import TutorialSeq2SeqTrainer

        real = TutorialSeq2SeqTrainer.sequence_metrics

        def scripted(self, eval_pred):
            calls.append(1)
            return real(self, eval_pred) | {"exact_match": SCRIPTED_EXACT_MATCH[len(calls) - 1]}

        monkeypatch.setattr(TutorialSeq2SeqTrainer, "sequence_metrics", scripted)
    run, _ = RUNS[version]
    folder = run(tmp_path, epochs=4, stop_at_exact_match=0.9)
    assert epochs_logged(folder) == [1, 2]
    assert [r["eval_exact_match"] for r in records(folder)] == SCRIPTED_EXACT_MATCH[:2]


# ---- --clip_grad_norm -------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["pytorch", "huggingface"])
def test_clip_grad_norm_changes_the_step_only_when_it_is_below_the_gradient_norm(version, tmp_path):
    """Two optimizer steps from the same start (the first at the schedule's rate 0 only feeds Adam's
    moments): a clip of 1e-9 shrinks the gradients under Adam's eps (a much smaller update than
    without clipping); a clip of 1e9 is above the norm (no change)."""
    run, weights = RUNS[version]
    kwargs = dict(train_size=64)
    off = weights(run(tmp_path / "off", clip_grad_norm=0.0, **kwargs))
    tiny = weights(run(tmp_path / "tiny", clip_grad_norm=1e-9, **kwargs))
    huge = weights(run(tmp_path / "huge", clip_grad_norm=1e9, **kwargs))
    assert not same_weights(tiny, off), "--clip_grad_norm 1e-9 made the same step as no clipping"
    assert same_weights(huge, off), "a clip above the gradient norm changed the step"


@pytest.mark.parametrize("version", ["pytorch", "huggingface"])
def test_clip_grad_norm_value_reaches_torch(version, tmp_path, monkeypatch):
    """torch clips with the flag's value once per optimizer step: torch.nn.utils.clip_grad_norm_ (our loop,
    accelerate < 1.16) or clip_grads_with_norm_ (accelerate >= 1.16 measures the norm itself, then calls
    it); with 0 nothing is clipped (the Trainer still measures the norm: max inf)."""
    calls = []

    def spy_on(name: str) -> None:
        real = getattr(torch.nn.utils, name)

        def spy(parameters, max_norm, *args, **kwargs):
            calls.append(max_norm)
            return real(parameters, max_norm, *args, **kwargs)

        monkeypatch.setattr(torch.nn.utils, name, spy)

    spy_on("clip_grad_norm_")  # torch's own clip_grad_norm_ calls its module's clip_grads_with_norm_
    spy_on("clip_grads_with_norm_")  # directly, not this attribute: no step is counted twice
    run, _ = RUNS[version]
    run(tmp_path / "on", clip_grad_norm=0.25)
    assert calls == [0.25, 0.25]  # 2 optimizer steps
    calls.clear()
    run(tmp_path / "off", clip_grad_norm=0.0)
    assert all(c == float("inf") for c in calls), calls


# ---- --dataloader_num_workers -----------------------------------------------------------------------
@pytest.mark.parametrize("version", ["pytorch", "huggingface"])
def test_dataloader_workers_are_used_and_give_the_same_batches(version, tmp_path, monkeypatch):
    """With 2 workers the training data comes through worker processes (a multiprocessing loader
    iterator), and training ends with bitwise the same weights as with 0: the same batches."""
    from torch.utils.data import dataloader

    started = []  # (examples in the loader's dataset, its workers) of each multiprocessing iterator

    class CountingIter(dataloader._MultiProcessingDataLoaderIter):
        def __init__(self, loader):
            started.append((len(loader.dataset), loader.num_workers))
            super().__init__(loader)

    monkeypatch.setattr(dataloader, "_MultiProcessingDataLoaderIter", CountingIter)
    run, weights = RUNS[version]
    inline = weights(run(tmp_path / "w0", dataloader_num_workers=0, dropout=0.1))
    assert started == []
    workers = weights(run(tmp_path / "w2", dataloader_num_workers=2, dropout=0.1))
    assert (TINY["train_size"], 2) in started, f"the training data came through no workers: {started}"
    assert same_weights(inline, workers)


def test_worker_loader_yields_the_batches_of_the_inline_loader():
    from utils.data.tasks import PairDataset, load_task_data
    from utils.runtime.distributed import World, make_train_loader

    train_pairs, _, tokenizer = load_task_data(RunConfig(**{**TINY, "train_size": 40}))
    dataset = PairDataset(train_pairs, tokenizer)
    batches = [list(make_train_loader(dataset, 8, World(), 0, workers)) for workers in (0, 2)]
    assert len(batches[0]) == len(batches[1]) == 5
    for a, b in zip(*batches):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- --bf16 -----------------------------------------------------------------------------------------
def _training_forward_dtypes(run, out: Path, **overrides) -> set:
    """(autocast on, output dtype) of every module called in training mode during the run."""
    seen = set()

    def hook(module, args, output):
        if module.training and isinstance(output, torch.Tensor) and output.is_floating_point():
            seen.add((torch.is_autocast_enabled("cpu"), output.dtype))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        run(out, **overrides)
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("version", ["pytorch", "huggingface"])
def test_bf16_runs_the_training_forward_under_bfloat16_autocast(version, tmp_path):
    from transformers.utils import is_torch_bf16_available_on_device

    if not is_torch_bf16_available_on_device("cpu"):
        pytest.skip("this torch has no bfloat16 autocast on the CPU")
    run, _ = RUNS[version]
    plain = _training_forward_dtypes(run, tmp_path / "fp32", precision="fp32")
    mixed = _training_forward_dtypes(run, tmp_path / "bf16", precision="bf16")
    assert plain == {(False, torch.float32)}
    assert (True, torch.bfloat16) in mixed, f"no module computed in bfloat16 under --bf16: {mixed}"


def test_hf_bf16_reaches_the_training_arguments(tmp_path, monkeypatch):
    import huggingface_version.arguments as hf_arguments

    seen = []
    real = hf_arguments.Seq2SeqTrainingArguments

    def spy(*args, **kwargs):
        seen.append(kwargs.get("bf16"))
        return real(*args, **kwargs)

    monkeypatch.setattr(hf_arguments, "Seq2SeqTrainingArguments", spy)
    run_hf(tmp_path, precision="bf16")
    assert seen == [True]


def test_hf_bf16_loss_takes_float32_logits_from_the_packed_step(tmp_path, monkeypatch):
    """accelerate turns model.forward's outputs back to float32; the packed step calls the modules
    itself, so the trainer casts: the summed loss must not be computed in bfloat16."""
    from transformers.utils import is_torch_bf16_available_on_device

    from utils.fast import SpeedUps

    if not is_torch_bf16_available_on_device("cpu"):
        pytest.skip("this torch has no bfloat16 autocast on the CPU")
    dtypes = []
    original = SpeedUps.loss_sum

    def recording(self):
        loss = original(self)
        return lambda logits, *args: dtypes.append(logits.dtype) or loss(logits, *args)

    monkeypatch.setattr(SpeedUps, "loss_sum", recording)
    run_hf(tmp_path / "bf16", precision="bf16")
    assert dtypes and set(dtypes) == {torch.float32}
