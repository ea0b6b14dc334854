"""The configuration dataclasses: one source of defaults, and user mistakes as one-line errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from utils.runtime.config import ModelConfig, RunConfig, UserError, resolve_device


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"hidden_size": 100, "num_heads": 3}, "divisible"),
        ({"num_layers": 0}, "num_layers must be a positive integer"),
        ({"hidden_size": 32.0}, "hidden_size must be a positive integer"),
        ({"num_heads": True}, "num_heads must be a positive integer"),
        ({"dropout": 1.0}, "dropout"),
        ({"share_embeddings": True, "tgt_vocab_size": 31}, "one vocabulary"),
    ],
)
def test_model_config_rejects_impossible_shapes(overrides, fragment):
    with pytest.raises(UserError, match=fragment):
        ModelConfig(**{"src_vocab_size": 30, "tgt_vocab_size": 30, **overrides})


def test_model_config_round_trips_and_ignores_unknown_keys():
    cfg = ModelConfig(src_vocab_size=30, tgt_vocab_size=31, hidden_size=32, num_heads=4, norm_first=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict({**cfg.to_dict(), "added_later": 1}) == cfg
    assert cfg.head_dim == 8


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"task": "nope"}, "task must be one of"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"epochs": -1}, "epochs"),
        ({"beam_size": 0}, "beam_size"),
        ({"hidden_size": 100, "num_heads": 3}, "divisible"),
        ({"min_len": 5, "max_len": 4}, "min_len"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"max_length": -1}, "max_length"),
        ({"device": "tpu"}, "device must be one of"),
    ],
)
def test_run_config_rejects_bad_values(overrides, fragment):
    with pytest.raises(UserError, match=fragment):
        RunConfig(**overrides)


def test_run_config_from_dict_checks_keys_and_types():
    assert RunConfig.from_dict({"epochs": 3, "dropout": 0}).dropout == 0  # an int is a fine float
    with pytest.raises(UserError, match="unknown config keys: bogus, colour"):
        RunConfig.from_dict({"bogus": 1, "colour": 2})
    with pytest.raises(UserError, match="epochs expects int, got 'ten'"):
        RunConfig.from_dict({"epochs": "ten"})
    with pytest.raises(UserError, match="epochs expects int"):
        RunConfig.from_dict({"epochs": True})  # a bool is not a count
    with pytest.raises(UserError, match="dropout expects float"):
        RunConfig.from_dict({"dropout": "0.1"})
    with pytest.raises(UserError, match="debug expects bool"):
        RunConfig.from_dict({"debug": "yes"})


def test_a_task_with_a_default_of_its_own_gets_it_unless_given():
    """addition learns with dropout 0 (99.6% held-out exact match after 4 epochs) and barely
    with 0.1 (under 8% after 10); at half the learning rate its epochs and their mean settle.
    So it has defaults of its own; flags and saved configs win."""
    from main import parse_config

    addition = RunConfig.from_dict({"task": "addition"})
    assert (addition.dropout, addition.lr_factor) == (0.0, 0.25)
    assert RunConfig.from_dict({"task": "reversal"}).lr_factor == 0.5
    assert RunConfig.from_dict({"task": "addition", "dropout": 0.2}).dropout == 0.2
    assert RunConfig.from_dict({"task": "reversal"}).dropout == RunConfig.from_dict({}).dropout == 0.1
    saved = RunConfig.from_dict({"task": "addition", "dropout": 0.1}).to_dict()
    assert RunConfig.from_dict(saved).dropout == 0.1
    assert parse_config(["--task", "addition"]).dropout == 0.0
    assert parse_config(["--task", "addition", "--dropout", "0.3"]).dropout == 0.3


def test_run_config_round_trips_and_builds_the_model_config():
    cfg = RunConfig(hidden_size=32, num_heads=4, num_layers=1, norm_first=True)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    model_cfg = cfg.model_config(30, 30, pad_id=0, bos_id=1, eos_id=2)
    shared = {f.name for f in dataclasses.fields(ModelConfig)} & {
        f.name for f in dataclasses.fields(RunConfig)
    }
    assert shared >= {"hidden_size", "num_layers", "num_heads", "ffn_size", "dropout", "norm_first"}
    assert all(getattr(model_cfg, name) == getattr(cfg, name) for name in shared)


def test_every_run_config_field_has_help():
    for f in dataclasses.fields(RunConfig):
        assert f.metadata.get("help"), f"--{f.name} has no help text"


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu")
