"""--precision: auto takes bf16 only where it is faster (a rule on the device, the version and the
model's width), says why, and a resumed run keeps the saved choice; the older spellings --bf16 / --fp16
(and YAML `bf16: true`) still work.

The branch of a CPU with bf16 instructions is reached here by patching `bf16_units`, so it is tested on
every machine whatever its CPU.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from main import parse_config
from tests.robust_helpers import TINY, flags, main_in_process
from utils.runtime import precision
from utils.runtime.config import RunConfig, UserError

CPU = torch.device("cpu")


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_an_explicit_precision_is_taken_as_given(name, monkeypatch):
    monkeypatch.setattr(precision, "bf16_units", lambda: "AMX tiles")
    assert precision.choose(name, CPU, 512) == precision.Choice(name, f"--precision {name}")


@pytest.mark.parametrize(("units", "width", "float32_attention", "expected", "why"), [
    ("", 512, True, "fp32", "no bfloat16 instructions"),
    ("avx512_bf16", 128, True, "fp32", "at hidden_size 128 bfloat16 is no faster"),
    ("avx512_bf16", 256, True, "bf16", "a model 256 wide trains 1.6-2.1x faster"),
    ("AMX tiles", 512, True, "bf16", "this CPU's AMX tiles"),
    ("AMX tiles", 512, False, "fp32", "backward is slow"),
])  # fmt: skip
def test_auto_on_a_cpu(units, width, float32_attention, expected, why, monkeypatch):
    monkeypatch.setattr(precision, "bf16_units", lambda: units)
    choice = precision.choose("auto", CPU, width, float32_attention)
    assert choice.name == expected and why in choice.why, choice


@pytest.mark.parametrize(("version", "settings", "expected"), [
    ("pytorch", {}, "bf16"), ("huggingface", {}, "bf16"), ("pytorch", {"fast": False}, "fp32"),
    ("huggingface", {"track_internals": True}, "fp32"), ("pytorch", {"track_internals": True}, "bf16"),
])  # fmt: skip
def test_auto_knows_which_runs_compute_the_attention_in_float32(version, settings, expected, monkeypatch):
    monkeypatch.setattr(precision, "bf16_units", lambda: "avx512_bf16")
    cfg = RunConfig(version=version, hidden_size=256, **settings)
    assert precision.resolve(cfg, CPU, version).precision == expected


def test_the_cpu_units_are_what_torch_detects():
    units = precision.bf16_units()
    assert units in ("", "AMX tiles", "avx512_bf16")
    detected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert (units != "") == detected


SPELLINGS = [([], "auto"), (["--bf16"], "bf16"), (["--no-bf16"], "auto"), (["--precision", "fp32"], "fp32"),
             (["--fp16", "--version", "huggingface"], "fp16")]  # fmt: skip


@pytest.mark.parametrize(("argv", "expected"), SPELLINGS)
def test_the_spellings_of_the_command_line(argv, expected):
    assert parse_config(argv).precision == expected


def test_the_spellings_of_a_yaml_file(tmp_path):
    (tmp_path / "a.yaml").write_text("bf16: true\n")
    assert parse_config(["--config", str(tmp_path / "a.yaml")]).precision == "bf16"
    with pytest.raises(UserError, match="config key fp16 expects bool"):
        RunConfig.from_dict({"fp16": "yes"})
    with pytest.raises(UserError, match=r"exclude each other \(bf16, fp16\)"):
        RunConfig.from_dict({"fp16": True, "bf16": True})


def test_auto_chosen_bf16_trains_in_bf16_is_recorded_and_a_resume_keeps_it(tmp_path, capsys, caplog,
                                                                           monkeypatch):  # fmt: skip
    monkeypatch.setattr(precision, "bf16_units", lambda: "AMX tiles")
    monkeypatch.setattr(precision, "BF16_MIN_WIDTH", TINY.get("hidden_size", 128))
    dtypes = set()

    def hook(module, args, output):
        if module.training and isinstance(output, torch.Tensor) and output.is_floating_point():
            dtypes.add(output.dtype)

    argv = ["--version", "pytorch", *flags(**{**TINY, "epochs": 1}), "--output_dir", str(tmp_path)]
    caplog.set_level(logging.INFO)
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        code, _, err = main_in_process(argv, capsys)
    finally:
        handle.remove()
    assert code == 0, err
    assert torch.bfloat16 in dtypes
    assert "pytorch_version: precision bf16 (auto: a model" in caplog.text
    record = json.loads((tmp_path / "results_pytorch" / "config.json").read_text())
    assert record["run"]["precision"] == "bf16"

    monkeypatch.setattr(precision, "bf16_units", lambda: "")  # now auto alone would choose fp32
    caplog.clear()
    at = argv.index("--epochs") + 1
    resumed = [*argv[:at], "2", *argv[at + 1 :], "--resume", "auto"]
    code, _, err = main_in_process(resumed, capsys)
    assert code == 0, err
    assert "precision bf16 (auto: the choice of the run this one resumes)" in caplog.text

    code, _, err = main_in_process([*resumed, "--precision", "fp32"], capsys)
    assert code == 2 and "precision: checkpoint 'bf16', flags 'fp32'" in err
