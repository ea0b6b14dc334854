"""Training the Hugging Face model end to end: results folder, wandb offline, comparison, loss parity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import COPY_RUN
from utils.fast import SpeedUps
from utils.runtime.config import RunConfig, UserError
from utils.training.recipe import noam_schedule, seq2seq_loss

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.slow]  # slow: Trainer runs

TINY = dict(task="copy", seed=0, device="cpu", train_size=256, eval_size=32, min_len=2, max_len=4,
            hidden_size=32, num_layers=2, num_heads=4, ffn_size=64, dropout=0.0, epochs=2,
            batch_size=32, warmup_steps=20, lr_factor=1.0, quiet=True)  # fmt: skip
HF_FLAGS = dict(version="huggingface", wandb=True, track_internals=True, track_every=200, debug=True)


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory, single_thread):
    """(cfg, summary, folder) of train_huggingface on the shared copy-task run, with --wandb,
    --track_internals and --debug: about ten seconds on one core."""
    from huggingface_version.train import train_huggingface

    cfg = RunConfig(output_dir=str(tmp_path_factory.mktemp("hf_run")), **COPY_RUN | HF_FLAGS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.setenv("WANDB_SILENT", "true")
        summary = train_huggingface(cfg)
    return cfg, summary, Path(cfg.output_dir) / "results_huggingface"


def test_train_huggingface_learns_and_writes_its_results_folder(hf_run):
    cfg, summary, out = hf_run
    expected = ["model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json", "training_args.bin", "summary.json", "training_curves.png",
                "logs/metrics.jsonl", "logs/train.log", "analysis_report.json", "internals.json",
                "configuration.py", "modeling.py", "attention.py", "layers.py", "stacks.py"]  # fmt: skip
    for name in expected:
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    steps_per_epoch = -(-cfg.train_size // cfg.batch_size)
    assert [r["epoch"] for r in records] == list(range(1, cfg.epochs + 1))
    assert [r["step"] for r in records] == [steps_per_epoch * e for e in range(1, cfg.epochs + 1)]
    assert set(records[0]) >= {"train_loss", "eval_loss", "eval_token_accuracy", "eval_exact_match", "lr"}
    assert summary["last_epoch"]["eval_loss"] == records[-1]["eval_loss"] and "figures_error" not in summary
    assert summary["final"]["eval_exact_match"] >= 0.9, summary["final"]  # pytorch_version: 1.0 here
    assert len(list((out / "visualizations").rglob("*.png"))) > 10
    steps = [entry["step"] for entry in json.loads((out / "internals.json").read_text())["qkv_history"]]
    last = steps_per_epoch * cfg.epochs
    assert steps == [1, *range(cfg.track_every, last, cfg.track_every), last]  # first, every N, last
    assert "--debug: forward pass of one example" in (out / "logs" / "train.log").read_text()


def test_saved_folder_loads_with_the_auto_classes_and_decodes(hf_run):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import huggingface_version  # noqa: F401  (registers the model type)

    _, _, out = hf_run
    model, info = AutoModelForSeq2SeqLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["abc", "zz"], return_tensors="pt", padding=True)
    outputs = model.generate(**batch, max_new_tokens=8)
    assert tokenizer.batch_decode(outputs, skip_special_tokens=True) == ["abc", "zz"]  # it copies


def test_inference_helper_decodes_greedy_and_beam(hf_run):
    from huggingface_version.inference import load_hf_for_inference, translate_hf

    _, _, out = hf_run
    model, tokenizer = load_hf_for_inference(out)
    assert translate_hf(model, tokenizer, ["dcba", "xy"]) == ["dcba", "xy"]
    assert translate_hf(model, tokenizer, ["dcba", "xy"], beam_size=4) == ["dcba", "xy"]
    with pytest.raises(UserError, match="empty --source"):
        translate_hf(model, tokenizer, [" "])
    with pytest.raises(UserError, match="not a saved Hugging Face model"):
        load_hf_for_inference(out / "logs")


def test_wandb_flag_writes_an_offline_run(hf_run):
    _, summary, out = hf_run
    assert summary["report_to"] == "wandb"
    assert list((out / "logs" / "wandb").glob("offline-run-*")), "no offline wandb run directory"


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    from utils.runtime.precision import check_precision

    with pytest.raises(UserError, match="--precision fp16 needs a CUDA GPU"):
        check_precision("fp16", "huggingface", torch.device("cpu"))


def test_trainer_loss_matches_pytorch_per_accumulation_window():
    """Two batches of one optimizer step: sum over tokens / tokens of the window, as pytorch_version."""
    from huggingface_version.custom_trainer import TutorialSeq2SeqTrainer

    torch.manual_seed(0)
    logits = [torch.randn(2, 5, 30), torch.randn(3, 4, 30)]
    targets = [torch.randint(4, 30, (2, 5)), torch.randint(4, 30, (3, 4))]
    targets[1][0, 2:] = 0  # padding
    tokens = sum(int((t != 0).sum()) for t in targets)
    expected = sum(seq2seq_loss(lg, t, 0, 0.1, "sum") for lg, t in zip(logits, targets)) / tokens

    class Stub(torch.nn.Module):  # hands back the prepared logits, only the asked positions' as a model does
        def forward(self, logits_to_keep=None, **inputs):
            keep = logits_to_keep
            return type("Out", (), {"logits": self.next if keep is None else self.next[keep]})()

    trainer = TutorialSeq2SeqTrainer.__new__(TutorialSeq2SeqTrainer)
    trainer.label_smoothing, trainer._batch_losses = 0.1, []
    trainer.speed = SpeedUps(packed_rows=False)  # the stub has no modules to pack
    trainer.args = type("Args", (), {"world_size": 1})()
    model, total = Stub().train(), 0.0
    for lg, t in zip(logits, targets):
        model.next = lg
        labels = t.masked_fill(t == 0, -100)
        total += trainer.compute_loss(
            model, {"labels": labels, "decoder_input_ids": t}, num_items_in_batch=tokens
        )
    torch.testing.assert_close(total, expected)


def test_run_comparison_end_to_end(tmp_path):
    import pytorch_version.train as pt_train
    from huggingface_version.compare import _history, run_comparison

    cfg = RunConfig(version="both", output_dir=str(tmp_path), **(TINY | {"train_size": 128, "eval_size": 16}))
    built = []
    original = pt_train.build_model

    def recording_build(*args):  # the model train() starts from, to check the shared start
        model = original(*args)
        built.append({k: v.clone() for k, v in model.state_dict().items()})
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pt_train, "build_model", recording_build)
        result = run_comparison(cfg)
    out = tmp_path / "results_comparison"
    assert {p.name for p in out.iterdir()} >= {"comparison.json", "comparison.md", "loss_curves.png"}
    assert json.loads((out / "comparison.json").read_text())["task"] == "copy"
    assert result["max_abs_logit_diff_converted"] < 1e-5
    assert result["pytorch"]["parameters"] == result["huggingface"]["parameters"]
    # same initial weights: the comparison's start model is the one pytorch_version.train built
    from huggingface_version.compare import initial_pytorch_model

    start = initial_pytorch_model(cfg).state_dict()
    assert all(torch.equal(start[k], v) for k, v in built[0].items())
    # same data, start, batches, recipe and first-step rate, dropout 0: the first epoch's losses agree closely
    first = [result[v]["train_loss_per_epoch"][0] for v in ("pytorch", "huggingface")]
    assert first[1] == pytest.approx(first[0], rel=1e-4)
    logs = [tmp_path / f"results_{v}" / "logs" / "metrics.jsonl" for v in ("pytorch", "huggingface")]
    rates = [[r["lr"] for r in _history(log)] for log in logs]
    assert rates[1] == pytest.approx(rates[0], rel=1e-12)  # the schedules agree after every epoch
    text = (out / "comparison.md").read_text()
    assert "hooks" in text and "Trainer" in text and "max_abs" not in text
    # the report's sentences are what was measured: both fingerprints, and the verdict on the logits
    from utils.runtime.checkpoint import weights_fingerprint

    assert result["same_initial_weights"] is True
    assert result["initial_weights"]["huggingface"] == weights_fingerprint(built[0])
    assert f"fingerprint {weights_fingerprint(built[0])} on each side" in text
    assert "the two are the same function" in text


def test_comparison_md_says_what_was_measured():
    from huggingface_version.compare import _markdown

    side = {"parameters": 10, "time_per_epoch_s": 1.0, "final_train_loss": 1.0}
    base = {"task": "copy", "epochs": 1, "pytorch": side, "huggingface": side,
            "max_abs_logit_diff_trained_separately": 0.1}  # fmt: skip
    differ = _markdown(base | {"same_initial_weights": False, "max_abs_logit_diff_converted": 0.5,
                               "initial_weights": {"pytorch": "aa", "huggingface": "bb"}})  # fmt: skip
    assert "started from different weights" in differ and "did not reproduce the model" in differ
    assert "same initial weights" not in differ and "same function" not in differ
    resumed = _markdown(base | {"same_initial_weights": False, "max_abs_logit_diff_converted": 1e-6,
                                "initial_weights": {"pytorch": None, "huggingface": "bb"}})  # fmt: skip
    assert "resumed from a checkpoint" in resumed and "the two are the same function" in resumed


def test_metrics_callback_writes_pytorch_keys_and_stops_at_exact_match(tmp_path):
    from transformers import TrainerControl, TrainerState

    from huggingface_version.callbacks import MetricsLogCallback
    from utils.runtime.tracking import Tracker

    callback = MetricsLogCallback(Tracker(tmp_path / "metrics.jsonl"), stop_at_exact_match=0.9)
    state, control = TrainerState(epoch=1.0, global_step=10), TrainerControl()
    callback.on_log(None, state, control, logs={"loss": 1.5, "learning_rate": 0.1})
    metrics = {"eval_loss": 1.0, "eval_token_accuracy": 0.8, "eval_exact_match": 0.5}
    callback.on_evaluate(None, state, control, metrics=metrics)
    assert not control.should_training_stop
    callback.on_evaluate(None, state, control, metrics=metrics | {"eval_exact_match": 0.95})
    assert control.should_training_stop
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record | {"elapsed_s": 0} == {"epoch": 1, "step": 10, "train_loss": 1.5, **metrics, "lr": 0.1,
                                         "elapsed_s": 0}  # fmt: skip


@pytest.mark.parametrize("fast", [True, False])
def test_the_trainer_builds_the_papers_adam_and_noam_schedule_from_its_arguments(tmp_path, fast):
    """transformers' own optimizer and schedule: AdamW without weight decay (= Adam), betas (0.9, 0.98),
    eps 1e-9, fused as utils/fast chooses; inverse_sqrt from the schedule's peak = noam_schedule at every
    step (0 at step 0, as noam_schedule)."""
    from transformers import Trainer
    from transformers.optimization import get_scheduler

    from huggingface_version.arguments import training_arguments

    cfg = RunConfig(version="huggingface", output_dir=str(tmp_path), **(TINY | {"fast": fast}))
    args = training_arguments(cfg, tmp_path, torch.device("cpu"))
    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    assert optimizer_cls is torch.optim.AdamW and args.weight_decay == 0.0
    peak = cfg.lr_factor * cfg.hidden_size**-0.5 * cfg.warmup_steps**-0.5
    assert kwargs == {"lr": pytest.approx(peak, rel=1e-15), "betas": (0.9, 0.98), "eps": 1e-9,
                      **({"fused": True} if fast else {})}  # fmt: skip
    optimizer = optimizer_cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    schedule = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(100))
    noam = noam_schedule(cfg.hidden_size, cfg.warmup_steps, cfg.lr_factor)
    rates = []
    for _ in range(5 * cfg.warmup_steps):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates[0] == 0.0
    assert rates == pytest.approx([noam(step) for step in range(len(rates))], rel=1e-12)
