"""Checkpoints: a round trip changes nothing; anything else fails with one clear line, and a
pickle that carries code is refused without running it."""

from __future__ import annotations

import os
import pickle
import random
import warnings
from pathlib import Path

import pytest
import torch

from pytorch_version.inference import load_for_inference
from pytorch_version.model import Transformer
from tests.conftest import tiny_config
from utils.data.tasks import tokenizer_for_task
from utils.runtime import checkpoint
from utils.runtime.checkpoint import load_checkpoint, save_checkpoint
from utils.runtime.config import UserError

pytestmark = pytest.mark.usefixtures("single_thread")


def _model(**overrides) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(tiny_config(**overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture
def saved(tmp_path) -> tuple[Path, Transformer]:
    model = _model()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, tokenizer_for_task("copy"), epoch=3, metrics={"eval_exact_match": 0.5})
    return path, model


@pytest.mark.parametrize(
    "overrides", [{}, {"norm_first": True}, {"tie_output": False}, {"share_embeddings": True}]
)
def test_save_then_load_gives_identical_logits(tmp_path, batch, overrides):
    model = _model(**overrides)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, tokenizer_for_task("copy"))
    loaded, tokenizer, _ = load_for_inference(path)
    assert loaded.config == model.config
    assert not loaded.training
    src, tgt = batch
    assert torch.equal(loaded(src, tgt), model(src, tgt))
    assert loaded.state_dict().keys() == model.state_dict().keys()
    # tying survives the round trip as tying, not as two equal copies
    tied = loaded.lm_head.weight is loaded.tgt_embed.embedding.weight
    assert tied == model.config.tie_output
    assert (loaded.src_embed is loaded.tgt_embed) == model.config.share_embeddings
    assert tokenizer.to_dict() == tokenizer_for_task("copy").to_dict()


def test_checkpoint_holds_plain_data_and_the_extras(saved):
    path, model = saved
    data = load_checkpoint(path)
    assert data["format"] == checkpoint.FORMAT
    assert data["epoch"] == 3 and data["metrics"] == {"eval_exact_match": 0.5}
    assert data["model_config"] == model.config.to_dict()
    assert data["tokenizer"] == {"type": "char", "alphabet": "abcdefghijklmnopqrstuvwxyz"}
    torch.load(path, weights_only=True)  # loads with torch's safe unpickler as it is


def _assert_one_line_user_error(path, *fragments: str) -> str:
    with pytest.raises(UserError) as info:
        load_for_inference(path)
    message = str(info.value)
    assert message.strip() and "\n" not in message, message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_checkpoint(tmp_path):
    _assert_one_line_user_error(tmp_path / "nope.pt", "not found")


def test_empty_checkpoint(tmp_path):
    path = tmp_path / "empty.pt"
    path.touch()
    _assert_one_line_user_error(path, "empty")


def test_a_directory_is_not_a_checkpoint(tmp_path):
    _assert_one_line_user_error(tmp_path, "not found")


def test_truncated_checkpoint(saved):
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_one_line_user_error(path, "corrupt or truncated")


@pytest.mark.parametrize(
    "content",
    [random.Random(0).randbytes(2000), b"hello world\n", b"PK\x03\x04" + b"\x00" * 100],
    ids=["random_bytes", "text", "broken_zip_header"],
)
def test_garbage_checkpoint(tmp_path, content):
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    _assert_one_line_user_error(path)


@pytest.mark.parametrize(
    "obj, fragment",
    [([1, 2, 3], "not a transformer-tutorial"), ({"weights": torch.ones(2)}, "not a transformer-tutorial"),
     ({"format": checkpoint.FORMAT}, "incomplete")],
    ids=["list", "foreign_dict", "marker_only"],
)  # fmt: skip
def test_a_safe_file_that_is_not_our_checkpoint(tmp_path, obj, fragment):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    _assert_one_line_user_error(path, fragment)


def test_state_that_does_not_fit_its_config(tmp_path, saved):
    path, _ = saved
    data = load_checkpoint(path)
    data["model_config"]["hidden_size"] = 64
    torch.save(data, tmp_path / "mismatch.pt")
    _assert_one_line_user_error(tmp_path / "mismatch.pt", "does not match")


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch_save", "raw_pickle"])
def test_a_pickle_that_carries_code_is_refused_and_never_runs(tmp_path, saved, writer):
    marker = tmp_path / "PWNED"
    payload = {**load_checkpoint(saved[0]), "extra": _RunsCode(marker)}
    path = tmp_path / "evil.pt"
    if writer == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    # the payload really is live: plain pickle would run it (checked with a harmless command)
    pickle.loads(pickle.dumps(_RunsCode(tmp_path / "proof")))
    assert (tmp_path / "proof").exists()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch may warn about the pickle protocol first
        message = _assert_one_line_user_error(path, "refusing")
    assert not marker.exists(), "the checkpoint's code ran"
    assert "weights_only` set to `False" not in message  # no advice to switch the safety off


def test_a_failed_save_leaves_the_previous_checkpoint_intact(saved, monkeypatch):
    path, _ = saved
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _model(norm_first=True), tokenizer_for_task("copy"))
    assert path.read_bytes() == before
    assert list(path.parent.iterdir()) == [path], "the temporary file was left behind"
