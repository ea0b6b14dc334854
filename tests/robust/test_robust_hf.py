"""huggingface_version: nothing lost, nothing unsafe. A SIGTERM makes the Trainer save checkpoint-N and
stop; `--resume` (resume_from_checkpoint) continues to bitwise the same weights and metrics; a NaN loss
skips its step; weights are only read from safetensors."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.faults import sigterm_after_step
from tests.robust_helpers import TINY, metrics_without_time
from utils.runtime.config import RunConfig, UserError
from utils.runtime.resilience import TrainingStopped

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.slow,
]  # slow: Trainer runs interrupted and resumed


@contextmanager
def warnings_caught():
    """A list that receives every Python warning and every WARNING+ record of transformers' loggers
    (they stop at the "transformers" logger, which does not propagate to the root's caplog)."""
    caught: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            caught.append(f"{record.name}: {record.getMessage()}")

    handler, hf_logger = Catch(logging.WARNING), logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as python_warnings:
            warnings.simplefilter("always")
            yield caught
        caught += [f"{w.category.__name__}: {w.message}" for w in python_warnings]
    finally:
        hf_logger.removeHandler(handler)


def _run(folder: Path, **overrides) -> dict:
    from huggingface_version.train import train_huggingface

    return train_huggingface(
        RunConfig(version="huggingface", output_dir=str(folder), **{**TINY, **overrides})
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, single_thread) -> Path:
    folder = tmp_path_factory.mktemp("hf_whole")
    _run(folder)
    return folder / "results_huggingface"


def test_sigterm_saves_a_trainer_checkpoint_and_resume_ends_bitwise_equal(
    tmp_path, uninterrupted, monkeypatch
):
    fault = sigterm_after_step(13)  # epoch 2, step 3 of 10
    try:
        with pytest.raises(TrainingStopped) as info:
            _run(tmp_path)
    finally:
        fault.remove()
    assert info.value.exit_code == 143
    out = tmp_path / "results_huggingface"
    assert "resume with: python main.py --version huggingface" in str(info.value)
    assert str(out / "checkpoint-13") in str(info.value)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-13"]
    saved = {p.name for p in (out / "checkpoint-13").iterdir()}
    assert {
        "model.safetensors",
        "optimizer.pt",
        "rng_state.pth",
        "trainer_state.json",
        "tutorial_state.pt",
    } <= saved
    assert "pytorch_model.bin" not in saved
    assert len(metrics_without_time(out)) == 1, "half an epoch was evaluated"
    assert not (out / "model.safetensors").exists(), "an interrupted run wrote its final model"

    summary = _run(tmp_path, resume="auto")
    final, expected = load_file(out / "model.safetensors"), load_file(uninterrupted / "model.safetensors")
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in final)
    assert metrics_without_time(out) == metrics_without_time(uninterrupted)
    assert summary["last_epoch"] == {
        k: v for k, v in metrics_without_time(uninterrupted)[-1].items() if "eval" in k
    }


def test_resume_from_an_epoch_checkpoint_equals_the_uninterrupted_run(tmp_path, uninterrupted):
    out = tmp_path / "results_huggingface"
    shutil.copytree(uninterrupted / "checkpoint-10", out / "checkpoint-10")
    with warnings_caught() as caught:  # was: "There were missing keys in the checkpoint model loaded:
        _run(tmp_path, resume="auto")  # ['lm_head.weight']" (the tied copy, which is never saved)
    assert caught == []
    final, expected = load_file(out / "model.safetensors"), load_file(uninterrupted / "model.safetensors")
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert metrics_without_time(out) == metrics_without_time(uninterrupted)


@pytest.mark.parametrize("overrides", [{}, {"share_embeddings": True}, {"tie_output": False}])
def test_a_saved_model_resumes_and_loads_with_its_tied_weights_and_no_warning(tmp_path, overrides):
    """Saving drops the tied copies; the model names them `_keys_to_ignore_on_save`, so the Trainer's
    checkpoint loading (strict=False) re-ties them and from_pretrained finds nothing missing."""
    from transformers import AutoModelForSeq2SeqLM, Seq2SeqTrainer, Seq2SeqTrainingArguments

    from huggingface_version.convert import hf_config_of
    from huggingface_version.inference import load_hf_for_inference
    from huggingface_version.modeling import TutorialTransformerForConditionalGeneration
    from huggingface_version.tokenization import char_tokenizer_fast
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    tokenizer = char_tokenizer_fast("abcdefghijklmnopqrstuvwxyz")
    model = TutorialTransformerForConditionalGeneration(hf_config_of(tiny_config(**overrides)))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    tied = {"lm_head.weight"} | (
        {"model.decoder.embed_tokens.weight"} if overrides.get("share_embeddings") else set()
    )
    assert model._keys_to_ignore_on_save == (set() if "tie_output" in overrides else tied)
    assert (
        set(load_file(tmp_path / "model.safetensors"))
        == set(model.state_dict()) - model._keys_to_ignore_on_save
    )
    fresh = TutorialTransformerForConditionalGeneration(hf_config_of(tiny_config(**overrides)))
    trainer = Seq2SeqTrainer(model=fresh, args=Seq2SeqTrainingArguments(str(tmp_path / "out"), use_cpu=True))
    with warnings_caught() as caught:
        trainer._load_from_checkpoint(str(tmp_path))  # what trainer.train(resume_from_checkpoint=...) calls
        loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
        load_hf_for_inference(tmp_path)
    assert caught == []
    for other in (fresh, loaded):
        assert (other.lm_head.weight is other.model.decoder.embed_tokens.weight) == (
            "tie_output" not in overrides
        )
        assert all(torch.equal(other.state_dict()[k], v) for k, v in model.state_dict().items())


def test_resume_refuses_other_settings_and_foreign_or_pickled_checkpoints(tmp_path, uninterrupted):
    from huggingface_version.resume import load_state, resume_checkpoint

    checkpoint = uninterrupted / "checkpoint-20"
    cfg = RunConfig(version="huggingface", output_dir=str(tmp_path), **{**TINY, "hidden_size": 64})
    with pytest.raises(UserError, match="other settings \\(hidden_size: checkpoint 32, flags 64\\)"):
        load_state(checkpoint, cfg)
    for path, fragment in [(tmp_path / "x.pt", "is a file"), (tmp_path / "nope", "not found"),
                           (uninterrupted, "not a Trainer checkpoint")]:  # fmt: skip
        if path.suffix == ".pt":
            path.write_bytes(b"x")
        with pytest.raises(UserError, match=fragment):
            resume_checkpoint(RunConfig(version="huggingface", resume=str(path)), uninterrupted)
    pickled = tmp_path / "checkpoint-20"
    pickled.mkdir()
    for name in ("trainer_state.json", "tutorial_state.pt"):
        (pickled / name).write_bytes((checkpoint / name).read_bytes())
    torch.save(load_file(checkpoint / "model.safetensors"), pickled / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"refusing .*no model.safetensors .*pickled pytorch_model.bin"):
        resume_checkpoint(RunConfig(version="huggingface", resume=str(pickled)), tmp_path)
    # a checkpoint of the toolkit before the Trainer built its optimizer (torch Adam, one parameter group)
    older = tmp_path / "older"
    shutil.copytree(checkpoint, older)
    state = torch.load(older / "tutorial_state.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "optimizer"}, older / "tutorial_state.pt")
    with pytest.raises(UserError, match="earlier version of the toolkit wrote it") as err:
        load_state(older, RunConfig(version="huggingface", output_dir=str(tmp_path), **TINY))
    assert "\n" not in str(err.value)
    # --resume auto passes over one cut short (a new run when nothing else is there), but a folder whose
    # only complete checkpoint it must not load is refused rather than overwritten by a new run
    (tmp_path / "checkpoint-30").mkdir()
    with pytest.raises(UserError, match=r"--resume auto: no checkpoint .* \(refusing .*checkpoint-20"):
        resume_checkpoint(RunConfig(version="huggingface", resume="auto"), tmp_path)
    shutil.rmtree(pickled)
    assert resume_checkpoint(RunConfig(version="huggingface", resume="auto"), tmp_path) is None


def test_inference_refuses_pickled_weights(tmp_path, uninterrupted):
    from huggingface_version.inference import load_hf_for_inference

    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((uninterrupted / name).read_bytes())
    torch.save(load_file(uninterrupted / "model.safetensors"), tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"refusing .*pickled pytorch_model.bin"):
        load_hf_for_inference(tmp_path)


def test_nan_losses_skip_steps_then_k_in_a_row_stop(tmp_path, monkeypatch, caplog):
    import huggingface_version.train as hf_train

    calls = {"n": 0, "bad": lambda n: n in (2, 3)}
    build = hf_train.build_hf_model

    def build_with_nan(*args):
        model = build(*args)

        def poison(module, inputs, output):  # NaN logits on the chosen training batches
            if not module.training:
                return output
            calls["n"] += 1
            return output * float("nan") if calls["bad"](calls["n"] - 1) else output

        model.lm_head.register_forward_hook(poison)
        return model

    monkeypatch.setattr(hf_train, "build_hf_model", build_with_nan)
    _run(tmp_path / "skip", epochs=1)
    weights = load_file(tmp_path / "skip" / "results_huggingface" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert "non-finite loss (nan) at optimizer step 3 (epoch 1)" in caplog.text
    optimizer = torch.load(tmp_path / "skip" / "results_huggingface" / "checkpoint-10" / "optimizer.pt",
                           weights_only=True)  # fmt: skip
    assert {int(s["step"]) for s in optimizer["state"].values()} == {10 - 2}, "Adam stepped on a NaN batch"

    calls.update(n=0, bad=lambda n: n >= 12)
    with pytest.raises(TrainingStopped, match=r"3 batches in a row .*last good checkpoint is .*-10"):
        _run(tmp_path / "stop", max_nonfinite_steps=3)
    out = tmp_path / "stop" / "results_huggingface"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10"]
    assert not (out / "model.safetensors").exists()


def test_disk_full_in_the_trainers_saving_is_one_line_and_the_earlier_checkpoint_resumes(
    tmp_path, monkeypatch, capsys
):
    from huggingface_version.resume import resume_checkpoint
    from tests.robust_helpers import assert_one_error_line, flags, main_in_process

    real_save = torch.save

    def full_at_epoch_2(obj, f, *args, **kwargs):  # the Trainer's optimizer.pt of checkpoint-20
        if str(f).endswith("checkpoint-20/optimizer.pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_epoch_2)
    argv = ["--version", "huggingface", *flags(**TINY), "--output_dir", str(tmp_path)]
    line = assert_one_error_line(*main_in_process(argv, capsys), "No space left on device")
    assert "results_huggingface" in line
    out = tmp_path / "results_huggingface"
    assert resume_checkpoint(RunConfig(version="huggingface", resume="auto"), out) == out / "checkpoint-10"
