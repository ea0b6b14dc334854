"""The Transformer of "Attention Is All You Need" as a Hugging Face model.

Importing this package registers the model with the Auto classes, so after
`import huggingface_version` a saved folder loads with
`AutoModelForSeq2SeqLM.from_pretrained(folder)` and `AutoConfig.from_pretrained(folder)`.

The files, in dependency order:
    configuration.py   TutorialTransformerConfig (PreTrainedConfig): ModelConfig's fields, HF names
    attention.py       masks, eager_attention_forward, TutorialAttention (eager | sdpa, Cache)
    layers.py          scaled embeddings, sinusoidal positions, encoder and decoder layers
    stacks.py          TutorialEncoder, TutorialDecoder
    modeling.py        TutorialTransformerModel, ...ForConditionalGeneration (+ GenerationMixin)
    convert.py         hf_config_of / model_config_of (checks a config), KEY_TABLE, pytorch_to_hf
    hooks.py           record_activations, run_with_cache: the activation cache through forward hooks
    tokenization.py    the character tokenizer as a PreTrainedTokenizerFast
    custom_trainer.py  Seq2SeqTrainer subclass and callbacks
    train.py           train_huggingface(cfg)          compare.py  run_comparison(cfg)
    inference.py       load_hf_for_inference, translate_hf
    selfcheck.py       HF_CHECKS for `main.py --version test`

The training side imports the Trainer and is loaded on demand:
`from huggingface_version.train import train_huggingface`.
"""

from utils.runtime.resilience import ensure_offline

ensure_offline()  # before transformers reads HF_HUB_OFFLINE: nothing in this package downloads

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM  # noqa: E402

from huggingface_version import hooks  # noqa: E402, F401  (registers the tracer utils.observe asks)
from huggingface_version.configuration import MODEL_TYPE, TutorialTransformerConfig  # noqa: E402
from huggingface_version.convert import KEY_TABLE, hf_to_pytorch, pytorch_to_hf  # noqa: E402
from huggingface_version.modeling import (  # noqa: E402
    TutorialTransformerForConditionalGeneration,
    TutorialTransformerModel,
)

# in this process: the Auto classes build these classes for model_type "tutorial_transformer" (local
# code: transformers prefers a registered class that is not its own even with trust_remote_code=True)
AutoConfig.register(MODEL_TYPE, TutorialTransformerConfig, exist_ok=True)
AutoModel.register(TutorialTransformerConfig, TutorialTransformerModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(
    TutorialTransformerConfig, TutorialTransformerForConditionalGeneration, exist_ok=True
)
# in a saved folder: save_pretrained copies the file of each class and every file it imports relatively
# (transformers.dynamic_module_utils.custom_object_save) and writes config.json's auto_map
TutorialTransformerConfig.register_for_auto_class()  # "AutoConfig": "configuration.TutorialTransformerConfig"
TutorialTransformerModel.register_for_auto_class("AutoModel")
TutorialTransformerForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")

__all__ = [
    "KEY_TABLE",
    "TutorialTransformerConfig",
    "TutorialTransformerForConditionalGeneration",
    "TutorialTransformerModel",
    "hf_to_pytorch",
    "pytorch_to_hf",
]
