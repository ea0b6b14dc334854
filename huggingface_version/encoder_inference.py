"""`--checkpoint results_huggingface --source INPUT` with an encoder-only folder (BERT, ViT).

The folder is loaded with transformers' Auto classes (the toolkit's own classes, never a folder's
code unless --trust_remote_code), its weights carried over into pytorch_version's model by the key
table (convert.py; the logits are equal, tests/hf/test_hf_encoder_conversion.py), and the input read
by pytorch_version/encoder_inference.py, so a class, the filled-in [MASK]s or an image's digit come
out the same way for both versions' checkpoints. Without the toolkit, the folder serves
`pipeline("fill-mask" | "text-classification" | "image-classification", model=folder,
trust_remote_code=True)`.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

import huggingface_version  # noqa: F401  (registers the model types with the Auto classes)
from huggingface_version.configuration_encoder import TutorialEncoderConfig
from huggingface_version.convert import hf_to_pytorch, model_config_of
from huggingface_version.folders import check_loading_info, check_vocabulary, reading, weights_refusal
from utils.data.digits import PatchTokenizer
from utils.data.tokenizer import ENCODER_SPECIALS, CharTokenizer
from utils.runtime.config import UserError


def is_encoder_folder(folder: str | Path, trust_remote_code: bool = False) -> bool:
    try:
        return isinstance(AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code),
                          TutorialEncoderConfig)  # fmt: skip
    except Exception:  # a damaged config.json: the other loader says what is wrong with the folder
        return False


def load_hf_encoder(folder: str | Path, device, trust_remote_code: bool = False):
    """(pytorch_version's model with the folder's weights, the toolkit's tokenizer of the folder)."""
    folder = Path(folder)
    if refusal := weights_refusal(folder):
        raise UserError(refusal)
    with reading(folder, trust_remote_code):
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        model_config_of(config)  # every value checked before a model is built from it
        if config.model_type == "tutorial_vit":
            auto = AutoModelForImageClassification
        else:
            auto = AutoModelForSequenceClassification if _labelled(config) else AutoModelForMaskedLM
        hf_model, info = auto.from_pretrained(folder, use_safetensors=True, output_loading_info=True,
                                              trust_remote_code=trust_remote_code)  # fmt: skip
        check_loading_info(folder, info)
        model = hf_to_pytorch(hf_model).to(device).eval()
        cfg = model.config
        if cfg.arch == "vit":
            return model, PatchTokenizer(cfg.image_size, cfg.patch_size, cfg.channels)
        tokenizer = _char_tokenizer(folder, trust_remote_code)
        check_vocabulary(folder, tokenizer.vocab_size, cfg.src_vocab_size)
        return model, tokenizer


def _labelled(config) -> bool:
    """A classifier's folder names its architecture ...ForSequenceClassification in config.json."""
    architectures = getattr(config, "architectures", None)
    return any("SequenceClassification" in str(name) for name in architectures or ())


def _char_tokenizer(folder, trust_remote_code: bool) -> CharTokenizer:
    """The toolkit's character vocabulary, read back from the folder's PreTrainedTokenizerFast."""
    fast = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    vocab = fast.convert_ids_to_tokens(list(range(len(fast))))
    tokenizer = CharTokenizer("".join(vocab[len(ENCODER_SPECIALS) :]), ENCODER_SPECIALS)
    if tokenizer.id_to_token != vocab:
        raise UserError(f"{folder}: its tokenizer is not a transformer-tutorial character vocabulary")
    return tokenizer
