"""commands/checkpoints.py: which kind of checkpoint a --checkpoint path is. A .pt file is pytorch_version's,
a save_pretrained folder huggingface_version's; anything else is one line that says what to pass."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from commands.checkpoints import checkpoint_kind
from pytorch_version.model import Transformer
from tests.conftest import tiny_config
from utils.data.tasks import tokenizer_for_task
from utils.runtime.checkpoint import save_checkpoint
from utils.runtime.config import UserError


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    """A real checkpoint of each version, and the paths that are neither."""
    from huggingface_version.convert import hf_config_of
    from huggingface_version.modeling import TutorialTransformerForConditionalGeneration

    tmp = tmp_path_factory.mktemp("kinds")
    torch.manual_seed(0)
    tokenizer = tokenizer_for_task("copy")
    cfg = tiny_config(src_vocab_size=tokenizer.vocab_size, tgt_vocab_size=tokenizer.vocab_size, num_layers=1)
    save_checkpoint(tmp / "model.pt", Transformer(cfg), tokenizer)
    hf_config = hf_config_of(cfg)
    TutorialTransformerForConditionalGeneration(hf_config).save_pretrained(tmp / "hf")
    (tmp / "no_config").mkdir()
    (tmp / "no_config" / "notes.txt").write_text("not a model\n")
    (tmp / "pt_folder").mkdir()
    save_checkpoint(tmp / "pt_folder" / "best_model.pt", Transformer(cfg), tokenizer)
    (tmp / "run_results").mkdir()  # what results_pytorch/ looks like from above: the run's settings
    (tmp / "run_results" / "config.json").write_text(json.dumps({"task": "copy", "epochs": 1}))
    (tmp / "random.bin").write_bytes(os.urandom(512))
    (tmp / "random.txt").write_bytes(os.urandom(512))
    return {"dir": tmp, "pt": tmp / "model.pt", "hf": tmp / "hf"}


def test_a_pt_file_is_pytorch_and_a_save_pretrained_folder_is_huggingface(paths):
    assert checkpoint_kind(paths["pt"]) == "pytorch"
    assert checkpoint_kind(str(paths["pt"])) == "pytorch"
    assert checkpoint_kind(paths["hf"]) == "huggingface"


def test_a_pt_file_is_judged_by_its_loader_not_here(paths):
    """The kind is the path's; an empty or broken .pt gets the loader's precise message later."""
    broken = paths["dir"] / "broken.pt"
    broken.write_bytes(b"")
    assert checkpoint_kind(broken) == "pytorch"


@pytest.mark.parametrize(
    "name, fragments",
    [
        ("missing.pt", ["checkpoint not found", "missing.pt", "expected a pytorch_version .pt file"]),
        ("missing_folder", ["checkpoint not found", "expected a pytorch_version .pt file"]),
        ("no_config", ["no_config is not a saved Hugging Face model (no config.json in it)", "expected"]),
        ("pt_folder", ["holds pytorch_version checkpoints; pass one of its .pt files", "best_model.pt"]),
        ("run_results", ["is a pytorch_version results folder; pass", "checkpoints/best_model.pt"]),
        ("random.txt", ["random.txt is not a checkpoint", "expected a pytorch_version .pt file"]),
        ("random.bin", ["random.bin belongs to a Hugging Face model folder"]),
        ("hf/model.safetensors", ["belongs to a Hugging Face model folder; pass the folder"]),
        ("hf/config.json", ["belongs to a Hugging Face model folder"]),
    ],
)
def test_anything_else_is_one_line_that_says_what_to_pass(paths, name, fragments):
    with pytest.raises(UserError) as info:
        checkpoint_kind(paths["dir"] / name)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
