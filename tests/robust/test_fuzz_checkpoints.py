"""Fuzzing the saved models the toolkit reads back, for every family and both versions, with hypothesis.

    .pt checkpoints   a real checkpoint truncated at any offset, bytes flipped inside any of its zip
                      members (the pickle or a tensor), other pickles (any plain data torch.save can
                      write), or one value of it replaced: a config field, the tokenizer, a tensor of
                      another shape or dtype
    HF folders        any file of a save_pretrained folder (config.json, generation_config.json, the
                      tokenizer's and image processor's files, model.safetensors, training_args.bin,
                      the shipped .py files) truncated, flipped, replaced by other bytes, or (JSON
                      files) one key given another value or removed
    --interactive     any lines on stdin, bytes that are not UTF-8 among them, to every family

The property, as a user sees it (`main.py --checkpoint PATH --source ...`, run in this process): the
model decodes (exit 0), or exit 2 with one `main.py: error:` line naming the file or folder; never a
traceback, and every file that existed before is byte for byte as it was. The models are four tiny
`--version both` runs (transformer, gpt, bert, vit), trained once for the module. The seed is fixed
(derandomize), no example database is kept, FUZZ_EXAMPLES sets the budget per surface (60, a quarter
of it for the resumed Trainer checkpoints; the long budget of test_fuzz_inputs.py runs 3x as many).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.robust.test_fuzz_inputs import EXAMPLES, FUZZ
from tests.robust_helpers import error_lines, main_in_process

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]  # slow: it trains 4 runs

FAMILIES = {  # --arch and --task of each run, and what decodes one input
    "transformer": (["--task", "copy"], ["--source", "abc"]),
    "gpt": (["--task", "reversal"], ["--source", "abc"]),
    "bert": (["--task", "majority"], ["--source", "abcab"]),
    "vit": (["--task", "digits"], ["--source", "{image}"]),
}
TINY = ["--train_size", "64", "--eval_size", "8", "--epochs", "1", "--hidden_size", "16", "--num_layers", "1",
        "--num_heads", "2", "--ffn_size", "32", "--batch_size", "16", "--seed", "0", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One tiny `--version both` run per family: {root}/{family}/results_{pytorch,huggingface}/."""
    import main

    root = tmp_path_factory.mktemp("fuzz_runs")
    for family, (task, _) in FAMILIES.items():
        argv = ["--version", "both", "--arch", family, *task, *TINY, "--output_dir", str(root / family)]
        assert main.main(argv) == 0, family
    from PIL import Image

    Image.new("L", (8, 8), 128).save(root / "digit.png")
    return root


def decode_argv(runs: Path, family: str, checkpoint: Path) -> list[str]:
    source = [a.format(image=runs / "digit.png") for a in FAMILIES[family][1]]
    return ["--checkpoint", str(checkpoint), *source, "--device", "cpu"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_decodes_or_one_line(result: tuple[int, str, str], names: list[str]) -> None:
    """Exit 0, or exit 2 with one `main.py: error:` line holding one of `names`; no traceback."""
    code, out, err = result
    assert "Traceback" not in out + err, err[-3000:]
    if code == 0:
        event("decoded")
        return
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, (code, err[-3000:])
    event("refused: " + re.sub(r"\S*/\S*|0x\w+|\d+", "#", lines[0].removeprefix("main.py: error: "))[:60])
    assert lines[0].startswith("main.py: error: "), lines[0]
    assert any(name in lines[0] for name in names), (names, lines[0])


@st.composite
def damaged_bytes(draw, data: bytes, members: list[zipfile.ZipInfo] | None = None) -> bytes:
    """`data` cut short, with bytes flipped (inside one zip member, where it is a zip), or other bytes."""
    kind = draw(st.sampled_from(["truncate", "flip", "other"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "other":
        return draw(st.one_of(st.binary(max_size=300), st.just(data[: len(data) // 2] * 2)))
    start, end = 0, len(data)
    if members:  # the pickle, a tensor, the format marks: the header sits before each member's data
        member = draw(st.sampled_from(members))
        start = member.header_offset
        end = min(len(data), start + 30 + len(member.filename) + 64 + member.compress_size)
    flipped = bytearray(data)
    for position in draw(st.lists(st.integers(start, end - 1), min_size=1, max_size=6)):
        flipped[position] ^= draw(st.integers(1, 255))
    return bytes(flipped)


PLAIN = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(), st.text(max_size=8),
              st.builds(torch.zeros, st.lists(st.integers(0, 3), max_size=3).map(tuple))),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)  # fmt: skip
FIELD_VALUES = st.one_of(
    PLAIN, st.integers(-3, 70), st.sampled_from(["gpt", "bert", "vit", "rotary", "mean"])
)


@st.composite
def other_checkpoint(draw, data: dict) -> object:
    """Other plain data in torch.save's format: anything, or the checkpoint with one value replaced."""
    kind = draw(st.sampled_from(["anything", "field", "tokenizer", "tensor", "top"]))
    if kind == "anything":
        return draw(PLAIN)
    data = {**data, "model_config": dict(data["model_config"]), "tokenizer": dict(data["tokenizer"]),
            "model_state": dict(data["model_state"])}  # fmt: skip
    if kind == "field":
        data["model_config"][draw(st.sampled_from(sorted(data["model_config"])))] = draw(FIELD_VALUES)
    elif kind == "tokenizer":
        data["tokenizer"][draw(st.sampled_from(sorted(data["tokenizer"])))] = draw(FIELD_VALUES)
    elif kind == "tensor":
        key = draw(st.sampled_from(sorted(data["model_state"])))
        shape = draw(st.lists(st.integers(0, 40), max_size=3))
        dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool]))
        data["model_state"][key] = torch.zeros(shape, dtype=dtype)
    else:
        data[draw(st.sampled_from(sorted(data)))] = draw(FIELD_VALUES)
    return data


def _checkpoint(runs: Path, family: str, tmp: Path) -> tuple[Path, Path]:
    """A copy of the family's best_model.pt in a folder of its own: (folder, file)."""
    folder = tmp / "ckpt"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    shutil.copy(runs / family / "results_pytorch" / "checkpoints" / "best_model.pt", folder / "model.pt")
    return folder, folder / "model.pt"


@FUZZ
@given(family=st.sampled_from(sorted(FAMILIES)), data=st.data())
def test_any_damaged_pt_checkpoint_decodes_or_is_one_line(runs, tmp_path_factory, capsys, family, data):
    folder, path = _checkpoint(runs, family, tmp_path_factory.mktemp("pt"))
    original = path.read_bytes()
    if data.draw(st.booleans(), label="other pickle"):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        torch.save(data.draw(other_checkpoint(saved)), path)
    else:
        path.write_bytes(data.draw(damaged_bytes(original, zipfile.ZipFile(path).infolist())))
    before = snapshot(folder)
    assert_decodes_or_one_line(main_in_process(decode_argv(runs, family, path), capsys), [str(path)])
    assert snapshot(folder) == before


def _json_variant(draw, text: str) -> bytes:
    """One key of a JSON object given another value, or removed; or other JSON altogether."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not value or draw(st.integers(0, 4)) == 0:
        return json.dumps(draw(PLAIN.filter(lambda v: not isinstance(v, torch.Tensor)), label="json"),
                          default=str).encode()  # fmt: skip
    key = draw(st.sampled_from(sorted(value)), label="key")
    if draw(st.booleans(), label="remove"):
        del value[key]
    else:
        value[key] = draw(FIELD_VALUES.filter(lambda v: not isinstance(v, torch.Tensor)), label="value")
    return json.dumps(value, default=str).encode()


@FUZZ
@given(family=st.sampled_from(sorted(FAMILIES)), data=st.data())
def test_any_damaged_hf_folder_decodes_or_is_one_line(runs, tmp_path_factory, capsys, family, data):
    folder = tmp_path_factory.mktemp("hf") / "model"
    source = runs / family / "results_huggingface"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("checkpoint-*", "logs", "*.png", "*.html"))
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    path = folder / data.draw(st.sampled_from(files), label="file")
    original = path.read_bytes()
    if path.suffix == ".json" and data.draw(st.booleans(), label="json edit"):
        path.write_bytes(_json_variant(data.draw, original.decode()))
    else:
        path.write_bytes(data.draw(damaged_bytes(original)))
    before = snapshot(folder)
    result = main_in_process(decode_argv(runs, family, folder), capsys)
    assert_decodes_or_one_line(result, [str(folder)])
    assert snapshot(folder) == before


LINES = st.lists(
    st.one_of(st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogatepass")),
              st.binary(max_size=20), st.sampled_from([b"", b"\r", b"[MASK]", b"\x00", b"\xef\xbb\xbfab"])),
    min_size=1, max_size=5,
)  # fmt: skip


@FUZZ
@given(family=st.sampled_from(["transformer", "gpt", "bert"]), version=st.sampled_from(["pytorch", "hf"]),
       lines=LINES)  # fmt: skip
def test_any_interactive_lines_decode_or_are_one_line(runs, capsys, monkeypatch, family, version, lines):
    """Each line is decoded, or the session ends with one line naming the input line; a ViT reads
    image paths, so its lines are the --source fuzzing of test_fuzz_inputs.py."""
    results = runs / family / ("results_pytorch" if version == "pytorch" else "results_huggingface")
    checkpoint = results / "checkpoints" / "best_model.pt" if version == "pytorch" else results
    stdin = b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    result = main_in_process(["--checkpoint", str(checkpoint), "--interactive", "--device", "cpu"], capsys)
    assert_decodes_or_one_line(result, ["input line", "--source", "MASK"])


TRAINER_FUZZ = settings(FUZZ, max_examples=max(4, EXAMPLES // 4))  # each case resumes a run: ~1 s


@TRAINER_FUZZ
@given(family=st.sampled_from(sorted(FAMILIES)), auto=st.booleans(), data=st.data())
def test_any_damaged_trainer_checkpoint_resumes_or_is_one_line(runs, tmp_path_factory, capsys, family, auto,
                                                               data):  # fmt: skip
    """One file of a Trainer checkpoint-N/ damaged, then `--resume` (the folder, or auto): the run
    resumes and ends, or stops with one line naming the checkpoint, its results folder as it was."""
    out = tmp_path_factory.mktemp("resume")
    results = out / "results_huggingface"
    shutil.copytree(runs / family / "results_huggingface", results)
    checkpoint = next(results.glob("checkpoint-*"))
    files = sorted(p.name for p in checkpoint.iterdir() if p.is_file())
    path = checkpoint / data.draw(st.sampled_from(files), label="file")
    original = path.read_bytes()
    if path.suffix == ".json" and data.draw(st.booleans(), label="json edit"):
        path.write_bytes(_json_variant(data.draw, original.decode()))
    elif path.suffix in (".pt", ".pth", ".bin", ".safetensors") and data.draw(st.booleans(), label="zip"):
        path.write_bytes(data.draw(damaged_bytes(original, zipfile.ZipFile(io.BytesIO(original)).infolist()
                                                 if zipfile.is_zipfile(path) else None)))  # fmt: skip
    else:
        path.write_bytes(data.draw(damaged_bytes(original)))
    before = {k: v for k, v in snapshot(results).items() if not k.endswith((".log", ".lock"))}
    argv = ["--version", "huggingface", "--arch", family, *FAMILIES[family][0], *TINY,
            "--output_dir", str(out), "--resume", "auto" if auto else str(checkpoint)]  # fmt: skip
    code, out_text, err = main_in_process(argv, capsys)
    assert_decodes_or_one_line((code, out_text, err), [str(checkpoint), str(results)])
    if code:
        after = {k: v for k, v in snapshot(results).items() if not k.endswith((".log", ".lock"))}
        assert after == before
