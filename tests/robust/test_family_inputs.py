"""The bad input table of tests/robust/test_robust_inputs.py, for every family and both versions: a
resume with other settings, a resume from a damaged checkpoint, a checkpoint decoded with flags that
contradict it. Each row ends with one `main.py: error:` line, exit 2, and every file of the run as it
was. (Damaged checkpoints of every kind are fuzzed in test_fuzz_checkpoints.py, the families' own
flags in tests/gpt and tests/encoder.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.robust_helpers import TINY, assert_one_error_line, flags, main_in_process

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.slow]  # slow: it trains 6 runs

FAMILIES = {"gpt": "reversal", "bert": "majority", "vit": "digits"}
RUNS = [(arch, version) for arch in FAMILIES for version in ("pytorch", "huggingface")]


def _args(arch: str, version: str, out: Path) -> list[str]:
    settings = {**TINY, "arch": arch, "task": FAMILIES[arch], "epochs": 1}
    return ["--version", version, *flags(**settings), "--output_dir", str(out)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    import main

    root = tmp_path_factory.mktemp("family_runs")
    for arch, version in RUNS:
        assert main.main(_args(arch, version, root / f"{arch}-{version}")) == 0
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".log"}


def _damaged_resume(results: Path, version: str, tmp: Path) -> str:
    """A copy of the run's checkpoint, its optimizer state cut in half."""
    if version == "pytorch":
        source = results / "checkpoints" / "checkpoint_epoch_1.pt"
        copy = tmp / "cut.pt"
        copy.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
        return str(copy)
    copy = tmp / "checkpoint-cut"
    shutil.copytree(next(results.glob("checkpoint-*")), copy)
    data = (copy / "optimizer.pt").read_bytes()
    (copy / "optimizer.pt").write_bytes(data[: len(data) // 2])
    return str(copy)


# each row: the fragment its error line holds (one of them: the versions word a damaged file apart)
ROWS = {
    "resume_other_settings": ["other settings (hidden_size: checkpoint 32, flags 64)"],
    "resume_damaged": ["corrupt or truncated", "not a complete torch.save file"],
    "checkpoint_other_dims": ["num_heads: checkpoint 4, flags 2"],
}


def _argv(row: str, arch: str, version: str, out: Path, tmp: Path) -> list[str]:
    results = out / f"results_{version}"
    if row == "resume_other_settings":
        return [*_args(arch, version, out), "--hidden_size", "64", "--resume", "auto"]
    if row == "resume_damaged":
        return [*_args(arch, version, out), "--resume", _damaged_resume(results, version, tmp)]
    checkpoint = results / "checkpoints" / "best_model.pt" if version == "pytorch" else results
    source = "abab"
    if arch == "vit":  # a ViT reads an image file
        from PIL import Image

        source = str(tmp / "digit.png")
        Image.new("L", (8, 8), 128).save(source)
    return ["--checkpoint", str(checkpoint), "--source", source, "--num_heads", "2"]


@pytest.mark.parametrize("row", sorted(ROWS))
@pytest.mark.parametrize("arch, version", RUNS, ids=[f"{a}-{v}" for a, v in RUNS])
def test_bad_input_is_one_line_for_every_family(runs, tmp_path, capsys, arch, version, row):
    out = runs / f"{arch}-{version}"
    argv = _argv(row, arch, version, out, tmp_path)
    before = _snapshot(out)
    line = assert_one_error_line(*main_in_process(argv, capsys), "")
    assert any(fragment in line for fragment in ROWS[row]), line
    assert _snapshot(out) == before, "a refused run changed a saved file"
