"""A saved HF GPT folder ships its model: `pipeline("text-generation")` runs on it and returns text, and
plain transformers, in a Python that cannot import this repository, loads it with trust_remote_code=True
and generates what the toolkit generates.

huggingface_version/__init__.py registers TutorialGPTConfig and TutorialGPTForCausalLM with
`register_for_auto_class`, so `save_pretrained` copies configuration_gpt.py and modeling_gpt.py, and
every file they import relatively, next to the weights, and writes an `auto_map` into config.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import pipeline

from huggingface_version.convert import pytorch_to_hf
from huggingface_version.tokenization import gpt_tokenizer_fast
from tests.factory import tiny_gpt
from utils.data.tokenizer import CharTokenizer

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[2]
MODEL_FILES = ["attention.py", "configuration.py", "configuration_gpt.py", "layers.py", "modeling_gpt.py"]
PROMPTS = ["First Citizen:\n", "ROMEO:\nO, she doth"]
NEW_TOKENS = 12

# Run by a Python whose path holds tests/no_network (the network guard) and site-packages, not the repository
PLAIN_TRANSFORMERS = """
import json, sys
folder, report, prompts, new = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
result = {}
try:
    import huggingface_version  # noqa: F401
    result["toolkit_importable"] = True
except ModuleNotFoundError:
    result["toolkit_importable"] = False
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

try:  # without trust_remote_code: transformers asks (stdin is closed), then refuses
    AutoModelForCausalLM.from_pretrained(folder)
    result["refusal"] = None
except ValueError as err:
    result["refusal"] = str(err)
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
with torch.no_grad():
    tokens = model.generate(**tokenizer(prompts, return_tensors="pt", padding=True), max_new_tokens=new)
generator = pipeline("text-generation", model=folder, trust_remote_code=True)
texts = [out[0]["generated_text"] for out in generator(prompts, max_new_tokens=new, do_sample=False)]
result |= {"model_class": f"{type(model).__module__}.{type(model).__qualname__}", "tokens": tokens.tolist(),
           "texts": texts}
with open(report, "w") as f:
    json.dump(result, f)
"""


def _alphabet() -> str:
    shakespeare = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
    text = shakespeare.read_text(encoding="utf-8") if shakespeare.is_file() else ""
    return text + "".join(PROMPTS) + "abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A GPT over a character vocabulary of Shakespeare's text, saved with its tokenizer."""
    chars = CharTokenizer(_alphabet())
    pt = tiny_gpt(2, src_vocab_size=chars.vocab_size, tgt_vocab_size=chars.vocab_size, max_position=64)
    with torch.no_grad():  # sharp random weights: varied characters, not one repeated
        for p in pt.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("gpt_folder")
    pytorch_to_hf(pt).eval().save_pretrained(path)
    gpt_tokenizer_fast(chars).save_pretrained(path)
    return path


def test_the_folder_carries_the_model_files_and_an_auto_map(folder):
    import huggingface_version

    package = Path(huggingface_version.__file__).parent
    for name in MODEL_FILES:
        assert (folder / name).read_bytes() == (package / name).read_bytes(), name
    assert not (folder / "modeling.py").exists() and not (folder / "stacks.py").exists()  # only what it needs
    assert json.loads((folder / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_gpt.TutorialGPTConfig",
        "AutoModelForCausalLM": "modeling_gpt.TutorialGPTForCausalLM",
    }
    assert json.loads((folder / "tokenizer_config.json").read_text())["padding_side"] == "left"


def test_the_text_generation_pipeline_runs_on_the_folder_and_returns_text(folder):
    generator = pipeline("text-generation", model=str(folder))
    assert type(generator.model).__name__ == "TutorialGPTForCausalLM"  # the toolkit's registered class
    outputs = generator(PROMPTS, max_new_tokens=NEW_TOKENS, do_sample=False)
    texts = [out[0]["generated_text"] for out in outputs]
    model, tokenizer = generator.model, generator.tokenizer
    tokens = model.generate(
        **tokenizer(PROMPTS, return_tensors="pt", padding=True), max_new_tokens=NEW_TOKENS
    )
    for prompt, text, row in zip(PROMPTS, texts, tokens):
        assert text.startswith(prompt) and len(text) > len(prompt)  # the prompt, then what the model wrote
        assert text == prompt + tokenizer.decode(row[-NEW_TOKENS:], skip_special_tokens=True)
    torch.manual_seed(0)
    sampled = generator(PROMPTS[0], max_new_tokens=NEW_TOKENS, do_sample=True, temperature=0.8, top_k=10)
    assert sampled[0]["generated_text"].startswith(PROMPTS[0])


@pytest.mark.slow  # a fresh Python process
def test_plain_transformers_loads_the_folder_and_generates_the_toolkits_tokens(folder, tmp_path):
    report, script = tmp_path / "report.json", tmp_path / "load_plainly.py"
    script.write_text(PLAIN_TRANSFORMERS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_", "TRANSFORMERS_"))}
    env |= {"PYTHONPATH": str(ROOT / "tests" / "no_network"), "HF_HUB_OFFLINE": "1",
            "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(script), str(folder), str(report), json.dumps(PROMPTS), str(NEW_TOKENS)],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plain = json.loads(report.read_text())
    assert plain["toolkit_importable"] is False
    assert "contains custom code which must be executed" in plain["refusal"]
    assert plain["model_class"].startswith("transformers_modules.")  # the folder's copy of modeling_gpt.py
    assert plain["model_class"].endswith("modeling_gpt.TutorialGPTForCausalLM")

    generator = pipeline("text-generation", model=str(folder))  # the toolkit's classes, in this process
    tokenizer = generator.tokenizer
    with torch.no_grad():
        tokens = generator.model.generate(**tokenizer(PROMPTS, return_tensors="pt", padding=True),
                                          max_new_tokens=NEW_TOKENS)  # fmt: skip
    assert tokens.tolist() == plain["tokens"]
    ours = [
        out[0]["generated_text"] for out in generator(PROMPTS, max_new_tokens=NEW_TOKENS, do_sample=False)
    ]
    assert ours == plain["texts"]
