"""A results_huggingface/ folder ships its model: plain transformers, in a Python that cannot import this
repository, loads it with `trust_remote_code=True` and generates what the toolkit generates.

huggingface_version/__init__.py registers the classes for the Auto classes (`register_for_auto_class`),
so `save_pretrained` copies configuration.py and modeling.py, and every file they import relatively,
next to the weights, and writes an `auto_map` into config.json.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from utils.runtime.config import RunConfig

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.slow]  # slow: fresh Python processes

ROOT = Path(__file__).resolve().parents[2]
MODEL_FILES = ["attention.py", "configuration.py", "layers.py", "modeling.py", "stacks.py"]
TEXTS = ["abc", "zyxw", "q"]
NEW_TOKENS = 8
STANDALONE = {"__future__", "collections", "dataclasses", "math", "typing", "torch", "transformers"}
TINY = dict(version="huggingface", task="copy", seed=0, device="cpu", train_size=256, eval_size=32, min_len=2,
            max_len=4, hidden_size=32, num_layers=2, num_heads=4, ffn_size=64, dropout=0.0, epochs=2,
            batch_size=32, warmup_steps=20, lr_factor=1.0, quiet=True)  # fmt: skip

# Run by a Python whose path holds tests/no_network (the network guard) and site-packages, not the repository
PLAIN_TRANSFORMERS = """
import json, logging, sys
folder, report = sys.argv[1], sys.argv[2]
result = {"sys_path": sys.path}
try:
    import huggingface_version  # noqa: F401
    result["toolkit_importable"] = True
except ModuleNotFoundError:
    result["toolkit_importable"] = False
import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

class Catch(logging.Handler):
    def emit(self, record):
        result.setdefault("warnings", []).append(record.getMessage())

logging.getLogger("transformers").addHandler(Catch(logging.WARNING))
for load in (AutoConfig.from_pretrained, AutoModelForSeq2SeqLM.from_pretrained):
    try:  # without trust_remote_code: transformers asks (stdin is closed), then refuses
        load(folder)
        result.setdefault("refusals", []).append(None)
    except ValueError as err:
        result.setdefault("refusals", []).append(str(err))
# AutoTokenizer reads config.json too: refused its code, it still builds the tokenizer (with a warning)
result["untrusted_tokenizer"] = type(AutoTokenizer.from_pretrained(folder)).__name__
result["warnings"] = []
model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
batch = tokenizer(json.loads(sys.argv[3]), return_tensors="pt", padding=True)
with torch.no_grad():
    tokens = model.generate(**batch, max_new_tokens=int(sys.argv[4]))
result |= {"model_class": f"{type(model).__module__}.{type(model).__qualname__}",
           "tokenizer_class": type(tokenizer).__name__, "tokens": tokens.tolist(),
           "decoded": tokenizer.decode(tokens, skip_special_tokens=True)}
with open(report, "w") as f:
    json.dump(result, f)
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory, single_thread) -> Path:
    """results_huggingface/ of a tiny train_huggingface run, saved as the toolkit saves it."""
    from huggingface_version.train import train_huggingface

    cfg = RunConfig(output_dir=str(tmp_path_factory.mktemp("shippable")), **TINY)
    train_huggingface(cfg)
    return Path(cfg.output_dir) / "results_huggingface"


def test_the_results_folder_and_every_checkpoint_carry_the_model_files_and_an_auto_map(results):
    from transformers.dynamic_module_utils import get_imports, get_relative_import_files

    import huggingface_version

    package = Path(huggingface_version.__file__).parent
    needed = {Path(f).name for f in get_relative_import_files(package / "modeling.py")} | {"modeling.py"}
    assert needed == set(MODEL_FILES)  # what modeling.py imports relatively, and what that imports
    for folder in (results, *sorted(results.glob("checkpoint-*"))):
        for name in MODEL_FILES:
            assert (folder / name).read_bytes() == (package / name).read_bytes(), folder / name
        assert json.loads((folder / "config.json").read_text())["auto_map"] == {
            "AutoConfig": "configuration.TutorialTransformerConfig",
            "AutoModelForSeq2SeqLM": "modeling.TutorialTransformerForConditionalGeneration",
        }
    assert not (results / ".saving-tmp").exists() and not list(results.glob(".saving-*"))
    for name in MODEL_FILES:  # they import the standard library, torch, transformers and each other only
        tree = ast.parse((package / name).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        assert {m.split(".")[0] for m in imported} <= STANDALONE, (name, imported)
        assert set(get_imports(package / name)) <= STANDALONE  # what transformers demands before loading


def test_plain_transformers_loads_the_folder_and_generates_the_toolkits_tokens(results, tmp_path):
    from huggingface_version.inference import load_hf_for_inference

    report, script = tmp_path / "report.json", tmp_path / "load_plainly.py"
    script.write_text(PLAIN_TRANSFORMERS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_", "TRANSFORMERS_"))}
    env |= {"PYTHONPATH": str(ROOT / "tests" / "no_network"), "HF_HUB_OFFLINE": "1",
            "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(script), str(results), str(report), json.dumps(TEXTS), str(NEW_TOKENS)],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plain = json.loads(report.read_text())
    assert plain["toolkit_importable"] is False
    assert plain["sys_path"][0] == str(tmp_path) and ROOT not in [
        Path(p).resolve() for p in plain["sys_path"]
    ]
    for refusal in plain["refusals"]:  # transformers' own words
        assert refusal is not None and "contains custom code which must be executed" in refusal, refusal
        assert "Please pass the argument `trust_remote_code=True`" in refusal
    assert plain["model_class"].startswith("transformers_modules.")  # the folder's copy of modeling.py
    assert plain["model_class"].endswith("modeling.TutorialTransformerForConditionalGeneration")
    assert (
        plain["tokenizer_class"] == plain["untrusted_tokenizer"] == "TokenizersBackend"
    )  # transformers' own
    assert plain["warnings"] == []  # loading with trust_remote_code=True and generating warn of nothing

    for fast in (True, False):  # the toolkit's loader, with and without utils/fast's module swaps
        model, tokenizer = load_hf_for_inference(results, fast=fast)
        batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
        with torch.no_grad():
            tokens = model.generate(**batch, max_new_tokens=NEW_TOKENS)
        assert tokens.tolist() == plain["tokens"], fast
    assert tokenizer.decode(tokens, skip_special_tokens=True) == plain["decoded"]


def _variant(results: Path, folder: Path) -> Path:
    """A copy of `results` whose model_type is one no class of this toolkit is registered for: loading it
    runs the copy of configuration.py / modeling.py in the folder (as a model edited and shipped would)."""
    shutil.copytree(results, folder, ignore=shutil.ignore_patterns("checkpoint-*", "logs"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "tutorial_variant"}))
    code = (folder / "configuration.py").read_text()
    (folder / "configuration.py").write_text(code.replace('"tutorial_transformer"', '"tutorial_variant"'))
    return folder


def test_the_toolkit_runs_a_folders_code_only_with_trust_remote_code(results, tmp_path, capsys):
    from huggingface_version.inference import load_hf_for_inference
    from tests.robust_helpers import assert_one_error_line, main_in_process, run_main
    from utils.runtime.config import UserError

    variant = _variant(results, tmp_path / "variant")
    with pytest.raises(UserError) as refused:  # by default: refused before transformers sees the folder
        load_hf_for_inference(variant)
    assert "model_type 'tutorial_variant'" in str(refused.value) and "\n" not in str(refused.value)
    argv = ["--checkpoint", str(variant), "--source", "abc", "--device", "cpu"]
    line = assert_one_error_line(*main_in_process(argv, capsys), "unless you pass --trust_remote_code")
    assert "configuration.py, modeling.py" in line

    # the toolkit's own folder loads with the toolkit's classes, with the flag or without it
    own = main_in_process(["--checkpoint", str(results), "--source", "abc", "--device", "cpu"], capsys)
    assert own[0] == 0 and own[1].startswith("source: abc\noutput: "), own
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules")}  # where transformers copies a folder's code
    done = run_main(*argv, "--trust_remote_code", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == own[1].splitlines()[-2:]  # the same output as the toolkit's model
    assert list((tmp_path / "modules").rglob("modeling.py")), "the folder's own code did not run"
