"""The Transformer of "Attention Is All You Need" as a Hugging Face model, and the decoder-only GPT.

Importing this package registers the models with the Auto classes, so after
`import huggingface_version` a saved folder loads with
`AutoModelForSeq2SeqLM.from_pretrained(folder)` (a GPT's: `AutoModelForCausalLM`) and
`AutoConfig.from_pretrained(folder)`, built from the classes of this package (local code).

What ships: the classes are also registered with `register_for_auto_class`, so `save_pretrained`
(the Trainer's checkpoint-N/ folders, and results_huggingface/ through
huggingface_version.resume.save_model_atomically) writes next to the weights configuration.py,
modeling.py and the files modeling.py imports relatively (attention.py, layers.py, stacks.py),
and an `auto_map` in config.json. These five "model files" import only torch and transformers, so
the folder loads where this repository is not installed, with plain transformers (a GPT's folder
ships configuration_gpt.py and modeling_gpt.py with configuration.py, attention.py and layers.py,
and loads with AutoModelForCausalLM, or `pipeline("text-generation", model=folder,
trust_remote_code=True)`):

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    print(tokenizer.decode(model.generate(**tokenizer(["abc"], return_tensors="pt"),
                                          max_new_tokens=20), skip_special_tokens=True))

Without trust_remote_code=True transformers refuses ("... contains custom code which must be
executed to correctly load the model ... Please pass the argument `trust_remote_code=True`"); the
tokenizer is transformers' own class (TokenizersBackend), but AutoTokenizer reads config.json
too, so pass the flag there as well or it asks, then warns. The toolkit itself never runs a
folder's code unless given --trust_remote_code (huggingface_version/inference.py).

The files, in dependency order:
    configuration.py   TutorialTransformerConfig (PreTrainedConfig): ModelConfig's fields, HF names
    attention.py       masks, eager_attention_forward, rotary turns, TutorialAttention (eager | sdpa, Cache)
    layers.py          embeddings, positions (sinusoidal, learned, rotary), encoder, decoder, GPT layers
    stacks.py          TutorialEncoder, TutorialDecoder
    modeling.py        TutorialTransformerModel, ...ForConditionalGeneration (+ GenerationMixin)
    configuration_gpt.py, modeling_gpt.py
                       the decoder-only GPT: TutorialGPTConfig, TutorialGPTModel, TutorialGPTForCausalLM
    configuration_encoder.py, modeling_encoder.py
                       the encoder-only family: TutorialBertConfig ("tutorial_bert"), TutorialViTConfig
                       ("tutorial_vit"), TutorialBertForMaskedLM, ...ForSequenceClassification,
                       TutorialViTForImageClassification (a folder loads with AutoModelForMaskedLM,
                       AutoModelForSequenceClassification, AutoModelForImageClassification)
    convert.py         hf_config_of / model_config_of (checks a config), KEY_TABLE, GPT_KEY_TABLE,
                       BERT_KEY_TABLE, VIT_KEY_TABLE, pytorch_to_hf, hf_to_pytorch (any family)
    hooks.py           record_activations, run_with_cache: the activation cache through forward hooks
                       (hooks_encoder.py: the encoder-only models', run_encoder_with_cache)
    tokenization.py    the character tokenizer as a PreTrainedTokenizerFast (a GPT's: left padding; a BERT's:
                       [CLS] text [SEP], for pipeline("fill-mask") and pipeline("text-classification"))
    image_processing_encoder.py
                       a ViT's TutorialGreyImageProcessor: grey, resized, in [0, 1] (image-classification)
    custom_trainer.py  the Seq2SeqTrainer subclass (what transformers lacks); causal_trainer.py: the GPT's
    callbacks.py       metrics.jsonl records, early stops, --track_internals, wandb
    run_data.py        each family's and task's examples (a GPT's prompt <s> completion </s>, lm windows)
    train.py           train_huggingface(cfg)          compare.py  run_comparison(cfg)
    generation.py      a GPT continues a text: generate with the sampling flags, past the context
    inference.py       load_hf_for_inference, translate_hf, continue_text_hf (--prompt)
    selfcheck.py       HF_CHECKS for `main.py --version test`

The training side imports the Trainer and is loaded on demand:
`from huggingface_version.train import train_huggingface`.
"""

from utils.runtime.resilience import ensure_offline

ensure_offline()  # before transformers reads HF_HUB_OFFLINE: nothing in this package downloads

from transformers import (  # noqa: E402
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)

from huggingface_version import hooks, hooks_encoder  # noqa: E402, F401  (register the tracers utils.observe asks)
from huggingface_version.configuration import MODEL_TYPE, TutorialTransformerConfig  # noqa: E402
from huggingface_version.configuration_encoder import (  # noqa: E402
    BERT_MODEL_TYPE,
    VIT_MODEL_TYPE,
    TutorialBertConfig,
    TutorialViTConfig,
)
from huggingface_version.configuration_gpt import MODEL_TYPE as GPT_MODEL_TYPE  # noqa: E402
from huggingface_version.configuration_gpt import TutorialGPTConfig  # noqa: E402
from huggingface_version.convert import GPT_KEY_TABLE, KEY_TABLE, hf_to_pytorch, pytorch_to_hf  # noqa: E402
from huggingface_version.image_processing_encoder import TutorialGreyImageProcessor  # noqa: E402
from huggingface_version.modeling import (  # noqa: E402
    TutorialTransformerForConditionalGeneration,
    TutorialTransformerModel,
)
from huggingface_version.modeling_encoder import (  # noqa: E402
    TutorialBertForMaskedLM,
    TutorialBertForSequenceClassification,
    TutorialBertModel,
    TutorialViTForImageClassification,
    TutorialViTModel,
)
from huggingface_version.modeling_gpt import TutorialGPTForCausalLM, TutorialGPTModel  # noqa: E402

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

# the decoder-only GPT, model_type "tutorial_gpt", the same way: a saved folder ships configuration_gpt.py,
# modeling_gpt.py and what they import relatively (configuration.py, attention.py, layers.py)
AutoConfig.register(GPT_MODEL_TYPE, TutorialGPTConfig, exist_ok=True)
AutoModel.register(TutorialGPTConfig, TutorialGPTModel, exist_ok=True)
AutoModelForCausalLM.register(TutorialGPTConfig, TutorialGPTForCausalLM, exist_ok=True)
TutorialGPTConfig.register_for_auto_class()  # "AutoConfig": "configuration_gpt.TutorialGPTConfig"
TutorialGPTModel.register_for_auto_class("AutoModel")
TutorialGPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")

# the encoder-only family: model_type "tutorial_bert" (a masked LM, or a sequence classifier) and
# "tutorial_vit" (an image classifier); a folder ships configuration_encoder.py, modeling_encoder.py and
# what they import relatively (configuration.py, attention.py, layers.py)
AutoConfig.register(BERT_MODEL_TYPE, TutorialBertConfig, exist_ok=True)
AutoConfig.register(VIT_MODEL_TYPE, TutorialViTConfig, exist_ok=True)
AutoModel.register(TutorialBertConfig, TutorialBertModel, exist_ok=True)
AutoModel.register(TutorialViTConfig, TutorialViTModel, exist_ok=True)
AutoModelForMaskedLM.register(TutorialBertConfig, TutorialBertForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(TutorialBertConfig, TutorialBertForSequenceClassification,
                                            exist_ok=True)  # fmt: skip
AutoModelForImageClassification.register(TutorialViTConfig, TutorialViTForImageClassification, exist_ok=True)
TutorialBertConfig.register_for_auto_class()  # "AutoConfig": "configuration_encoder.TutorialBertConfig"
TutorialViTConfig.register_for_auto_class()
TutorialBertModel.register_for_auto_class("AutoModel")
TutorialViTModel.register_for_auto_class("AutoModel")
TutorialBertForMaskedLM.register_for_auto_class("AutoModelForMaskedLM")
TutorialBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
TutorialViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")
# a ViT's image processor (grey, resized, in [0, 1]): saved beside its model, shipped the same way
AutoImageProcessor.register(TutorialViTConfig, slow_image_processor_class=TutorialGreyImageProcessor,
                            exist_ok=True)  # fmt: skip
TutorialGreyImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "GPT_KEY_TABLE",
    "KEY_TABLE",
    "TutorialBertConfig",
    "TutorialBertForMaskedLM",
    "TutorialBertForSequenceClassification",
    "TutorialBertModel",
    "TutorialGPTConfig",
    "TutorialGPTForCausalLM",
    "TutorialGPTModel",
    "TutorialTransformerConfig",
    "TutorialTransformerForConditionalGeneration",
    "TutorialTransformerModel",
    "TutorialViTConfig",
    "TutorialViTForImageClassification",
    "TutorialViTModel",
    "hf_to_pytorch",
    "pytorch_to_hf",
]
