"""Saved encoder-only folders work with transformers' pipelines and ship their code.

`pipeline("fill-mask")` and `pipeline("text-classification")` on a BERT's folder (its tokenizer frames a
text as `[CLS] text [SEP]`, as utils.data does), `pipeline("image-classification")` on a ViT's (its image
processor turns an RGB picture into the grey 8 x 8 pixels of the digits): each gives the answer the
pytorch model gives. A fresh Python that cannot import this repository loads the folders with
trust_remote_code=True and gets the same answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from huggingface_version.convert import pytorch_to_hf
from huggingface_version.image_processing_encoder import TutorialGreyImageProcessor
from huggingface_version.tokenization import encoder_tokenizer_fast, to_fast_tokenizer
from tests.factory import tiny_bert, tiny_vit
from utils.data.tokenizer import ENCODER_SPECIALS, CharTokenizer
from utils.runtime.errors import UserError

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[2]
CHARS = CharTokenizer("abcdefghijklmnopqrstuvw", ENCODER_SPECIALS)  # 7 specials + 23 letters: 30 ids
TEXTS = ["abba", "cadb", "wvut"]
MASKED = "ab[MASK]ba"
MODEL_FILES = ["attention.py", "configuration.py", "configuration_encoder.py", "layers.py",
               "modeling_encoder.py"]  # fmt: skip


def _sharpen(model):
    """Random weights of a larger scale: clear winners instead of near ties."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.5)
    return model


def digit_images() -> tuple[np.ndarray, list[Image.Image]]:
    """Three of sklearn's digits (values 0..16) and the same as 8-bit RGB pictures (value * 255 / 16)."""
    from sklearn.datasets import load_digits

    values = load_digits().images[:3]
    pictures = [Image.fromarray(np.round(v * 255 / 16).astype(np.uint8)).convert("RGB") for v in values]
    return values, pictures


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A masked LM, a classifier (mean pooling) and a ViT, each saved with its tokenizer or processor."""
    root = tmp_path_factory.mktemp("encoder_folders")
    models = {"mlm": tiny_bert(), "classifier": tiny_bert(labels=("no", "yes", "maybe"), pooling="mean"),
              "vit": tiny_vit()}  # fmt: skip
    out = {}
    for name, pt in models.items():
        _sharpen(pt)
        out[name] = root / name
        pytorch_to_hf(pt).eval().save_pretrained(out[name])
        side = TutorialGreyImageProcessor() if name == "vit" else encoder_tokenizer_fast(CHARS)
        side.save_pretrained(out[name])
        torch.save(pt, out[name] / "pytorch_model_for_the_test.pt")
    return out


def _pytorch(folder: Path):
    return torch.load(folder / "pytorch_model_for_the_test.pt", weights_only=False).eval()


def _ids(text: str) -> torch.Tensor:
    """(1, S) ids as utils.data frames a text: [CLS] characters [SEP], "[MASK]" one token."""
    chars = text.replace("[MASK]", "\0")
    ids = [CHARS.mask_id if c == "\0" else CHARS.token_to_id[c] for c in chars]
    return torch.tensor([[CHARS.cls_id, *ids, CHARS.sep_id]])


def test_the_tokenizer_frames_a_text_as_the_data_does():
    fast = encoder_tokenizer_fast(CHARS)
    assert fast("abba")["input_ids"] == [CHARS.cls_id, *CHARS.encode("abba", add_eos=False), CHARS.sep_id]
    assert fast(MASKED)["input_ids"] == _ids(MASKED)[0].tolist()  # "[MASK]" is one token
    assert fast.decode(fast("cab")["input_ids"], skip_special_tokens=True) == "cab"
    assert to_fast_tokenizer(CHARS)("abba")["input_ids"] == fast("abba")["input_ids"]  # either way in
    with pytest.raises(UserError, match="a BERT reads characters with the specials"):
        encoder_tokenizer_fast(CharTokenizer("abc"))


def test_fill_mask_pipeline_guesses_what_the_pytorch_model_guesses(folders):
    fill = pipeline("fill-mask", model=str(folders["mlm"]))
    top = fill(MASKED)[0]
    ids = _ids(MASKED)
    with torch.no_grad():
        expected = int(_pytorch(folders["mlm"])(ids)[0, MASKED.index("[") + 1].argmax())
    assert top["token"] == expected and top["token_str"] == CHARS.id_to_token[expected]


def test_text_classification_pipeline_answers_as_the_pytorch_model(folders):
    classify = pipeline("text-classification", model=str(folders["classifier"]))
    pt = _pytorch(folders["classifier"])
    labels = ("no", "yes", "maybe")
    with torch.no_grad():
        expected = [labels[int(pt(_ids(text)).argmax())] for text in TEXTS]
    assert [out["label"] for out in classify(TEXTS)] == expected


def test_the_image_processor_gives_back_the_digits_values_and_the_pipeline_the_pytorch_answer(folders):
    values, pictures = digit_images()
    processor = TutorialGreyImageProcessor()
    pixels = processor(pictures, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (3, 1, 8, 8)
    digits = torch.tensor(values[:, None] / 16, dtype=torch.float32)
    torch.testing.assert_close(pixels, digits, rtol=0, atol=0)
    big = processor(pictures[0].resize((32, 32)), return_tensors="pt")["pixel_values"]
    assert big.shape == (1, 1, 8, 8) and big.min() >= 0 and big.max() <= 1  # any size: resized
    # trust_remote_code: transformers reads the processor's auto_map as a video processor's too, and would
    # ask whether to run it (the in-process classes are used all the same)
    classify = pipeline("image-classification", model=str(folders["vit"]), trust_remote_code=True)
    with torch.no_grad():
        expected = _pytorch(folders["vit"])(pixels).argmax(-1).tolist()
    assert [out[0]["label"] for out in classify(pictures)] == [str(d) for d in expected]


def test_the_folders_carry_the_model_files_and_an_auto_map(folders):
    import huggingface_version

    package = Path(huggingface_version.__file__).parent
    for name in MODEL_FILES:
        assert (folders["mlm"] / name).read_bytes() == (package / name).read_bytes(), name
    assert json.loads((folders["classifier"] / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_encoder.TutorialBertConfig",
        "AutoModelForSequenceClassification": "modeling_encoder.TutorialBertForSequenceClassification",
    }
    processor = json.loads((folders["vit"] / "preprocessor_config.json").read_text())
    shipped = "image_processing_encoder.TutorialGreyImageProcessor"
    assert processor["auto_map"] == {"AutoImageProcessor": shipped}
    assert (folders["vit"] / "image_processing_encoder.py").is_file()


PLAIN_TRANSFORMERS = """
import json, sys
import numpy as np
from PIL import Image
folders, report, texts, masked = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
result = {}
try:
    import huggingface_version  # noqa: F401
    result["toolkit_importable"] = True
except ModuleNotFoundError:
    result["toolkit_importable"] = False
from transformers import pipeline
fill = pipeline("fill-mask", model=folders["mlm"], trust_remote_code=True)
classify = pipeline("text-classification", model=folders["classifier"], trust_remote_code=True)
images = pipeline("image-classification", model=folders["vit"], trust_remote_code=True)
pictures = [Image.open(p) for p in json.loads(sys.argv[5])]
result |= {"fill": fill(masked)[0]["token"], "classes": [o["label"] for o in classify(texts)],
           "digits": [o[0]["label"] for o in images(pictures)],
           "model_class": type(fill.model).__module__}
with open(report, "w") as f:
    json.dump(result, f)
"""


@pytest.mark.slow  # a fresh Python process
def test_plain_transformers_runs_the_three_pipelines_on_the_folders(folders, tmp_path):
    _, pictures = digit_images()
    paths = []
    for i, picture in enumerate(pictures):
        paths.append(str(tmp_path / f"digit{i}.png"))
        picture.save(paths[-1])
    report, script = tmp_path / "report.json", tmp_path / "load_plainly.py"
    script.write_text(PLAIN_TRANSFORMERS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_", "TRANSFORMERS_"))}
    env |= {"PYTHONPATH": str(ROOT / "tests" / "no_network"), "HF_HUB_OFFLINE": "1",
            "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    names = json.dumps({k: str(v) for k, v in folders.items()})
    done = subprocess.run(
        [sys.executable, str(script), names, str(report), json.dumps(TEXTS), MASKED, json.dumps(paths)],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plain = json.loads(report.read_text())
    assert plain["toolkit_importable"] is False and plain["model_class"].startswith("transformers_modules.")
    assert plain["fill"] == pipeline("fill-mask", model=str(folders["mlm"]))(MASKED)[0]["token"]
    ours = pipeline("text-classification", model=str(folders["classifier"]))(TEXTS)
    assert plain["classes"] == [o["label"] for o in ours]
    vit = pipeline("image-classification", model=str(folders["vit"]), trust_remote_code=True)
    assert plain["digits"] == [o[0]["label"] for o in vit([Image.open(p) for p in paths])]


def test_the_toolkit_reads_an_input_with_each_folder_as_with_the_pytorch_model(folders, tmp_path, capsys):
    import main
    from pytorch_version.encoder_inference import read
    from utils.data.digits import PatchTokenizer

    png = tmp_path / "digit.png"
    digit_images()[1][0].save(png)
    for name, source in (("mlm", MASKED), ("classifier", "abba"), ("vit", str(png))):
        folder = tmp_path / name  # the folder as a run saves it: without the test's pytorch model
        shutil.copytree(folders[name], folder, ignore=shutil.ignore_patterns("*.pt"))
        assert main.main(["--checkpoint", str(folder), "--source", source, "--device", "cpu"]) == 0
        answer = capsys.readouterr().out.splitlines()[-1].removeprefix("output: ")
        pt = _pytorch(folders[name])
        tokenizer = CHARS if name != "vit" else PatchTokenizer(8, 2, 1)
        assert answer == read(pt, tokenizer, [source])[0], name
