"""Training: the copy task is learnt from chance to (nearly) perfect on held-out strings,
gradient accumulation is exact, and a run leaves the documented results folder behind."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch

from pytorch_version.evaluate import evaluate
from pytorch_version.inference import load_for_inference
from pytorch_version.train import build_model, train, train_one_epoch
from tests.conftest import COPY_RUN
from utils.data.tasks import PairDataset, make_loader, make_toy_task, tokenizer_for_task
from utils.runtime.config import RunConfig, UserError
from utils.training.recipe import noam_schedule, seq2seq_loss

pytestmark = pytest.mark.usefixtures("single_thread")


def test_copy_task_goes_from_chance_to_high_held_out_accuracy(copy_run):
    cfg, summary, _ = copy_run
    _, eval_pairs = make_toy_task(cfg.task, cfg.train_size, cfg.eval_size, cfg.seed, cfg.min_len, cfg.max_len)
    tokenizer = tokenizer_for_task(cfg.task)
    torch.manual_seed(cfg.seed)  # the same initial weights train() started from
    untrained = build_model(cfg, tokenizer)
    loader = make_loader(PairDataset(eval_pairs, tokenizer), 256, False)
    before = evaluate(untrained, loader, tokenizer, [t for _, t in eval_pairs], cfg, "cpu")

    chance = 1 / (tokenizer.vocab_size - 2)  # PAD and BOS are never predicted
    assert before["eval_exact_match"] == 0.0
    assert before["eval_token_accuracy"] < 3 * chance
    after = summary["final"]
    assert summary["best_eval_exact_match"] >= 0.95, summary
    assert after["eval_exact_match"] >= 0.85, after
    assert after["eval_token_accuracy"] >= 0.95, after
    assert after["eval_loss"] < 0.1 * before["eval_loss"], (before, after)


def test_best_checkpoint_reproduces_the_reported_exact_match(copy_run):
    cfg, summary, out = copy_run
    model, tokenizer, data = load_for_inference(out / "checkpoints" / "best_model.pt")
    _, eval_pairs = make_toy_task(cfg.task, cfg.train_size, cfg.eval_size, cfg.seed, cfg.min_len, cfg.max_len)
    loader = make_loader(PairDataset(eval_pairs, tokenizer), 256, False)
    metrics = evaluate(model, loader, tokenizer, [t for _, t in eval_pairs], cfg, "cpu")
    assert metrics["eval_exact_match"] == summary["best_eval_exact_match"]
    assert data["metrics"]["eval_exact_match"] == summary["best_eval_exact_match"]
    assert 1 <= data["epoch"] <= cfg.epochs


def test_results_folder_has_every_documented_file(copy_run):
    cfg, summary, out = copy_run
    config = json.loads((out / "config.json").read_text())
    assert config["run"] == {**cfg.to_dict(), "precision": "fp32"}  # auto, resolved: a narrow model on a CPU
    assert config["model"]["hidden_size"] == cfg.hidden_size

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["final"] == summary["final"] and on_disk["task"] == "copy"

    assert (out / "checkpoints" / "best_model.pt").stat().st_size > 0
    epochs = sorted(p.name for p in (out / "checkpoints").glob("checkpoint_epoch_*.pt"))
    assert epochs == sorted(f"checkpoint_epoch_{n}.pt" for n in range(1, cfg.epochs + 1))
    assert not list(out.rglob("*.tmp")), "a temporary file of the atomic save was left behind"

    records = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, cfg.epochs + 1))
    assert records[-1]["eval_exact_match"] == summary["last_epoch"]["eval_exact_match"]
    assert records[0]["step"] < records[-1]["step"]

    log = (out / "logs" / "train.log").read_text()
    assert "epoch 1:" in log and f"epoch {cfg.epochs}:" in log, f"train.log holds {log[:200]!r}"

    png = (out / "training_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def _accumulation_setup(pairs, batch_size: int, accum: int):
    """A model, SGD with a constant lr and a loader over `pairs` in order."""
    tokenizer = tokenizer_for_task("copy")
    cfg = RunConfig(**{**COPY_RUN, "batch_size": batch_size, "gradient_accumulation_steps": accum,
                       "clip_grad_norm": 0.0, "label_smoothing": 0.1})  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # plain SGD: the update is the gradient
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    loader = make_loader(PairDataset(pairs, tokenizer), batch_size, shuffle=False)
    return model, optimizer, scheduler, loader, cfg


def _train_and_get_state(pairs, batch_size: int, accum: int) -> dict[str, torch.Tensor]:
    model, optimizer, scheduler, loader, cfg = _accumulation_setup(pairs, batch_size, accum)
    train_one_epoch(model, loader, optimizer, scheduler, cfg, "cpu", "test")
    return copy.deepcopy(model.state_dict())


def _assert_same_state(a: dict, b: dict) -> None:
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("min_len, max_len", [(4, 4), (2, 9)], ids=["equal_lengths", "mixed_lengths"])
def test_two_accumulated_batches_make_the_same_step_as_one_double_batch(min_len, max_len):
    pairs, _ = make_toy_task("copy", 16, 1, seed=7, min_len=min_len, max_len=max_len)
    accumulated = _train_and_get_state(pairs, batch_size=8, accum=2)
    double = _train_and_get_state(pairs, batch_size=16, accum=1)
    torch.manual_seed(0)
    initial = build_model(RunConfig(**COPY_RUN), tokenizer_for_task("copy")).state_dict()
    assert not torch.equal(double["lm_head.weight"], initial["lm_head.weight"]), "no step was taken"
    _assert_same_state(accumulated, double)


def test_a_last_partial_accumulation_window_is_a_full_step_on_its_own_batches():
    """24 examples in batches of 8 with accumulation 2: steps on examples 0-15, then 16-23."""
    pairs, _ = make_toy_task("copy", 24, 1, seed=8, min_len=2, max_len=9)
    accumulated = _train_and_get_state(pairs, batch_size=8, accum=2)

    model, optimizer, scheduler, _, cfg = _accumulation_setup(pairs, 16, 1)
    for chunk in (pairs[:16], pairs[16:]):
        loader = make_loader(PairDataset(chunk, tokenizer_for_task("copy")), 16, shuffle=False)
        train_one_epoch(model, loader, optimizer, scheduler, cfg, "cpu", "test")
    _assert_same_state(accumulated, model.state_dict())


def test_seq2seq_loss_ignores_padding_and_smooths_labels():
    logits = torch.randn(2, 3, 10, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[4, 5, 2], [6, 2, 0]])
    real = targets != 0
    plain = torch.nn.functional.cross_entropy(logits[real], targets[real])
    torch.testing.assert_close(seq2seq_loss(logits, targets, 0, 0.0), plain)
    # changing the logits at a PAD target changes nothing
    moved = logits.clone()
    moved[1, 2] += 100
    torch.testing.assert_close(seq2seq_loss(moved, targets, 0, 0.1), seq2seq_loss(logits, targets, 0, 0.1))
    assert seq2seq_loss(logits, targets, 0, 0.1) != seq2seq_loss(logits, targets, 0, 0.0)


def test_noam_schedule_warms_up_linearly_then_decays_as_inverse_square_root():
    rate = noam_schedule(d_model=64, warmup_steps=100, factor=2.0)
    peak = 2.0 * 64**-0.5 * 100**-0.5
    assert rate(100) == pytest.approx(peak)
    assert rate(50) == pytest.approx(peak / 2)  # linear rise
    assert rate(400) == pytest.approx(peak / 2)  # 1/sqrt(step) decay
    assert rate(0) == 0.0 < rate(1)  # the first update, as transformers' inverse_sqrt
    assert max(range(1, 1000), key=rate) == 100


def test_training_is_deterministic_by_seed():
    pairs, _ = make_toy_task("copy", 32, 1, seed=9, min_len=2, max_len=6)
    first = _train_and_get_state(pairs, batch_size=8, accum=1)
    second = _train_and_get_state(pairs, batch_size=8, accum=1)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_run_that_cannot_start_writes_nothing(tmp_path):
    handlers = list(logging.getLogger().handlers)
    impossible = {**COPY_RUN, "output_dir": str(tmp_path), "min_len": 1, "max_len": 1}  # 26 strings
    with pytest.raises(UserError, match="too many"):
        train(RunConfig(**impossible))
    assert list(tmp_path.iterdir()) == [], "a results folder was created for a run that never started"
    assert logging.getLogger().handlers == handlers, "train.log's handler was left on the root logger"


def test_logits_only_where_there_are_labels_give_the_same_loss_and_gradients(batch):
    """Logits only where there is a label (the readable model's `[labelled]`, the HF model's
    `logits_to_keep` mask): same loss, same gradients as full (B, T, V) logits with the padding
    ignored by the loss."""
    from huggingface_version.convert import pytorch_to_hf
    from pytorch_version.model import Transformer
    from tests.conftest import tiny_config

    src, tgt = batch
    tgt_out = torch.cat([tgt[:, 1:], torch.full_like(tgt[:, :1], 2)], dim=1)
    tgt_out[1, 3:] = 0  # padding in one row
    labelled = tgt_out != 0

    def loss_and_grads(model, masked: bool):
        model.zero_grad()
        if masked:
            loss = seq2seq_loss(model(src, tgt)[labelled], tgt_out[labelled], 0, 0.1, "sum")
        else:
            loss = seq2seq_loss(model(src, tgt), tgt_out, 0, 0.1, "sum")
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    torch.manual_seed(0)
    model = Transformer(tiny_config())
    full, masked = loss_and_grads(model, False), loss_and_grads(model, True)
    torch.testing.assert_close(masked[0], full[0])
    for a, b in zip(masked[1], full[1]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    hf = pytorch_to_hf(model).eval()
    with torch.no_grad():
        inputs = dict(input_ids=src, attention_mask=(src != 0).long(), decoder_input_ids=tgt)
        all_logits, some = hf(**inputs).logits, hf(**inputs, logits_to_keep=labelled).logits
    torch.testing.assert_close(some, all_logits[labelled])


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_written_down_loss_gradient_equals_autograd_through_cross_entropy(smoothing):
    from utils.fast.loss import labelled_loss_sum

    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(17, 11, generator=g, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, 11, (17,), generator=g)
    ours = labelled_loss_sum(logits, targets, smoothing)
    (grad_ours,) = torch.autograd.grad(2.5 * ours, logits)  # an upstream gradient that is not 1
    reference = seq2seq_loss(logits, targets, -1, smoothing, "sum")
    (grad_reference,) = torch.autograd.grad(2.5 * reference, logits)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grad_ours, grad_reference)
    assert torch.autograd.gradcheck(lambda x: labelled_loss_sum(x, targets, smoothing), (logits,))
