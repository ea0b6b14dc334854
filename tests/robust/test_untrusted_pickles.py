"""Nothing from a downloaded folder runs code: pickles whose unpickling would create a file, put where the
toolkit reads (a .pt for --checkpoint, --resume PATH and --resume auto; every pickle of a Trainer
checkpoint-N/ for the HF version's --resume) end with exit code 2 and one line naming the file, the
file is never created and no file that was there changes. The HF folder's pickles are checked without
unpickling them (huggingface_version.resume.pickle_refusal) before the Trainer gets the folder."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from tests.robust_helpers import TINY, assert_one_error_line, flags, main_in_process

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.slow]  # slow: two tiny training runs
ONE_EPOCH = {**TINY, "epochs": 1, "checkpoint_average": 0}


class CreatesFile:
    """Unpickled, it opens `path` for writing: the file appears."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class RunsCommand(CreatesFile):
    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def write_evil(path: Path, marker: Path, raw: bool = False, command: bool = False) -> None:
    payload = {"state": {}, "x": (RunsCommand if command else CreatesFile)(marker)}
    if raw:
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file but train.log, which records refused attempts (as tests/robust/test_robust_inputs.py)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "train.log"
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, single_thread) -> Path:
    """One epoch of each version (results_pytorch/, results_huggingface/ with checkpoint-10/)."""
    from pytorch_version.train import train
    from utils.runtime.config import RunConfig

    folder = tmp_path_factory.mktemp("runs")
    train(RunConfig(version="pytorch", output_dir=str(folder), **ONE_EPOCH))
    from huggingface_version.train import train_huggingface

    train_huggingface(RunConfig(version="huggingface", output_dir=str(folder), **ONE_EPOCH))
    return folder


def test_the_payloads_are_live(tmp_path):
    """Plain pickle runs them: what the tests below refuse would really have created the file."""
    for kind in (CreatesFile, RunsCommand):
        marker = tmp_path / kind.__name__
        obj = pickle.loads(pickle.dumps(kind(marker)))
        if hasattr(obj, "close"):
            obj.close()
        assert marker.exists()


def _refused(argv: list[str], capsys, marker: Path, fragment: str, folder: Path) -> str:
    before = snapshot(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        line = assert_one_error_line(*main_in_process(argv, capsys), fragment)
    assert not marker.exists(), f"the pickle's code ran: {line}"
    changed = {k: v for k, v in before.items() if snapshot(folder).get(k) != v}
    assert not changed, f"files changed: {sorted(changed)}"
    return line


@pytest.mark.parametrize("raw", [False, True], ids=["torch_save", "raw_pickle"])
def test_pytorch_checkpoint_and_resume_refuse_a_pickle_with_code(tmp_path, runs, capsys, raw):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "model.pt"
    write_evil(evil, marker, raw=raw, command=raw)
    _refused(["--checkpoint", str(evil), "--source", "hi"], capsys, marker, "refusing", tmp_path)
    train = ["--version", "pytorch", *flags(**ONE_EPOCH)]
    line = _refused([*train, "--output_dir", str(tmp_path / "a"), "--resume", str(evil)], capsys, marker,
                    "refusing", tmp_path)  # fmt: skip
    assert str(evil) in line and "weights_only` set to `False" not in line  # no advice to switch it off
    assert ("Unsupported operand" if raw else "GLOBAL io.open") in line  # what it refused, not torch's advice

    # --resume auto: the only checkpoints carry code -> refused, not a new run over the folder
    checkpoints = tmp_path / "b" / "results_pytorch" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("step.pt", "interrupted.pt", "checkpoint_epoch_1.pt"):
        write_evil(checkpoints / name, marker, raw=raw)
    _refused([*train, "--output_dir", str(tmp_path / "b"), "--resume", "auto"], capsys, marker,
             "--resume auto: no checkpoint", tmp_path)  # fmt: skip


def test_pytorch_resume_auto_passes_over_a_pickle_with_code_to_the_good_checkpoint(tmp_path, runs, capsys):
    marker = tmp_path / "PWNED"
    checkpoints = tmp_path / "results_pytorch" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(runs / "results_pytorch" / "checkpoints" / "checkpoint_epoch_1.pt", checkpoints)
    write_evil(checkpoints / "step.pt", marker)
    argv = ["--version", "pytorch", *flags(**{**ONE_EPOCH, "epochs": 2}), "--output_dir", str(tmp_path),
            "--resume", "auto"]  # fmt: skip
    code, _, err = main_in_process(argv, capsys)
    assert code == 0, err
    assert not marker.exists()
    assert (checkpoints / "checkpoint_epoch_2.pt").is_file() and not (checkpoints / "step.pt").exists()


@pytest.mark.parametrize(
    "name, raw",
    [
        ("optimizer.pt", False),
        ("scheduler.pt", False),
        ("rng_state.pth", False),
        ("training_args.bin", False),
        ("optimizer.pt", True),
    ],
)
def test_hf_resume_refuses_a_checkpoint_folder_with_a_pickle_with_code(tmp_path, runs, capsys, name, raw):
    marker = tmp_path / "PWNED"
    folder = tmp_path / "downloaded" / "checkpoint-10"
    shutil.copytree(runs / "results_huggingface" / "checkpoint-10", folder)
    write_evil(folder / name, marker, raw=raw, command=name == "scheduler.pt")
    train = ["--version", "huggingface", *flags(**ONE_EPOCH), "--output_dir", str(tmp_path / "new")]
    line = _refused([*train, "--resume", str(folder)], capsys, marker, f"refusing {folder / name}", tmp_path)
    assert ("not a complete torch.save file" if raw else "not plain data") in line
    # --resume auto in that folder: its only checkpoint is refused, not replaced by a new run
    shutil.move(folder.parent, tmp_path / "results_huggingface")
    auto = ["--version", "huggingface", *flags(**ONE_EPOCH), "--output_dir", str(tmp_path)]
    _refused([*auto, "--resume", "auto"], capsys, marker, "--resume auto: no checkpoint", tmp_path)


def test_hf_inference_never_loads_training_args(tmp_path, runs, capsys):
    """--checkpoint FOLDER reads config.json, model.safetensors and the tokenizer's JSON, never the pickle."""
    marker = tmp_path / "PWNED"
    folder = tmp_path / "results_huggingface"
    shutil.copytree(runs / "results_huggingface", folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    write_evil(folder / "training_args.bin", marker)
    code, _, err = main_in_process(["--checkpoint", str(folder), "--source", "ab"], capsys)
    assert code == 0, err
    assert not marker.exists()
