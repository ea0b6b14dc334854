"""The model's shape: `ModelShape` declares each architecture setting once (with its why and its
--help), `ModelConfig` adds the vocabularies and special ids. utils/runtime/config.py's RunConfig
inherits ModelShape, so every field is also a flag of main.py and a key of a --config file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from utils.runtime.errors import UserError

# the families: the paper's encoder-decoder, a decoder-only GPT, and two encoder-only models: BERT for
# text (masked LM, classification) and the Vision Transformer for images
ARCHS = ("transformer", "gpt", "bert", "vit")
ENCODER_ONLY = ("bert", "vit")
POOLINGS = ("cls", "mean")
# --arch bert's classification tasks (utils/data/classify.py): each defaults to no dropout, as addition does
CLASSIFY_TASKS = ("palindrome", "sorted", "majority", "brackets")
POSITIONS = ("sinusoidal", "learned", "rotary")
LAB_FIELDS = ("residual", "ffn_gate", "layer_drop")  # ModelConfig's ablations: pytorch_version/lab alone


def require_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(f"{name} must be a positive integer, got {value!r}")


def setting(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class ModelShape:
    """The architecture's hyperparameters (paper, section 3): flags of main.py, fields of ModelConfig.

    The one place each is declared. RunConfig inherits them (so they are flags), ModelConfig adds
    the vocabularies and special ids; huggingface_version/configuration.py names them for
    Hugging Face. A field marked `training_only` shapes training, not the weights: a loaded
    checkpoint need not match it. `arch_defaults` give a family its own default (applied by
    RunConfig.from_dict when the setting is not given, as `task_defaults` are).
    """

    # the family: the paper's encoder-decoder; a decoder-only GPT (its prompt and its output are one
    # sequence, read by one stack of masked self-attention layers); or the encoder alone: BERT reads
    # text, the Vision Transformer (ViT) image patches, each token seeing every other (no look-ahead)
    arch: str = setting("transformer", "model family: the paper's encoder-decoder, a decoder-only GPT, or "
                     "an encoder-only BERT (text) or ViT (images)", choices=ARCHS)  # fmt: skip

    hidden_size: int = setting(128, "d_model, the width of every token vector")  # the paper's base: 512
    num_layers: int = setting(2, "encoder layers and decoder layers (N in the paper)")  # the paper: 6
    num_heads: int = setting(4, "attention heads (h); must divide hidden_size")  # each works in d_k = D / h
    ffn_size: int = setting(512, "inner size of the position-wise feed-forward network (d_ff)")  # paper: 4 D
    # P_drop on sublayer outputs and embeddings (section 5.4)
    dropout: float = setting(0.1, "dropout on sublayer outputs and embeddings (paper: 0.1)",
                          task_defaults=dict.fromkeys(("addition", "digits", *CLASSIFY_TASKS), 0.0),
                          training_only=True)  # fmt: skip
    # on attention weights: not in the paper (tensor2tensor adds it)
    attention_dropout: float = setting(0.0, "dropout on attention weights (not in the paper)",
                                    training_only=True)  # fmt: skip
    # False: post-LN as in the paper. True: pre-LN (Xiong et al. 2020), steadier when deep; GPT-2's choice
    # (BERT keeps post-LN; ViT is pre-LN)
    norm_first: bool = setting(False, "pre-LN instead of the paper's post-LN",
                            arch_defaults={"gpt": True, "vit": True})  # fmt: skip
    # where order comes from: the paper adds a sinusoidal table (section 3.5), GPT-2 learns one vector per
    # position, rotary (Su et al. 2021) turns each query and key by an angle that grows with its position,
    # so their dot product depends on the distance between them (gpt only); BERT and ViT learn theirs
    positions: str = setting("sinusoidal", "position information: the paper's sinusoidal table, a learned "
                             "one, or rotary (RoPE; --arch gpt)", choices=POSITIONS,
                          arch_defaults={"gpt": "rotary", "bert": "learned", "vit": "learned"})  # fmt: skip
    # the FFN's nonlinearity: the paper's max(0, x); GPT, BERT and ViT use GELU, x * Phi(x) (Hendrycks &
    # Gimpel 2016)
    activation: str = setting("relu", "FFN nonlinearity (gelu: the other families)", choices=("relu", "gelu"),
                           arch_defaults={"gpt": "gelu", "bert": "gelu", "vit": "gelu"})  # fmt: skip
    # Xavier-uniform as the Annotated Transformer; BERT: N(0, 0.02) ("normal"); GPT-2 the same, and the
    # projections that write into the residual stream scaled by 1/sqrt(2 N) so the stream's variance does
    # not grow with depth. ViT: Xavier, measured on the digits: N(0, 0.02) gave 69% held-out after 10
    # epochs, Xavier 82% after 5 (a tiny patch's 4 pixels times 0.02 weights start too faint)
    init: str = setting("xavier", "weight initialisation: xavier, N(0, 0.02) (normal: BERT, ViT), or "
                     "gpt2's N(0, 0.02) with smaller residual projections",
                     choices=("xavier", "normal", "gpt2"),
                     arch_defaults={"gpt": "gpt2", "bert": "normal"})  # fmt: skip
    # BERT normalises the sum of its embeddings before the first (post-LN) layer (Devlin et al. 2019);
    # the lecture's nn.TransformerEncoder classifier does not
    embedding_norm: bool = setting(False, "LayerNorm on the embeddings before the first layer (--arch bert)",
                                arch_defaults={"bert": True})  # fmt: skip
    # a sequence classifier reads the [CLS] token's output (BERT, through its tanh pooler) or the mean
    # of every real token's output (the lecture's TransformerClassifier)
    pooling: str = setting("cls", "--arch bert classification: read [CLS]'s output, or the mean of all",
                        choices=POOLINGS)  # fmt: skip
    # ViT: the image is cut into patch_size x patch_size squares, each one a token (Dosovitskiy et al. 2021)
    patch_size: int = setting(2, "--arch vit: side of the square patches an image is cut into")
    # share the target embedding with the pre-softmax linear (section 3.4)
    tie_output: bool = setting(True, "tie the output projection to the target embedding")

    def __post_init__(self) -> None:
        """The checks of every architecture setting, with one-line errors: the only place they are made."""
        for name in ("hidden_size", "num_layers", "num_heads", "ffn_size"):
            require_positive(name, getattr(self, name))
        if self.hidden_size % self.num_heads:
            raise UserError(
                f"hidden_size must be divisible by num_heads, got hidden_size={self.hidden_size} "
                f"and num_heads={self.num_heads}"
            )
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise UserError(f"{name} must be in [0, 1), got {value!r}")
        for f in dataclasses.fields(ModelShape):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise UserError(
                    f"{f.name} must be one of {', '.join(choices)}; got {getattr(self, f.name)!r}"
                )
        require_positive("patch_size", self.patch_size)
        if self.arch == "transformer":  # the paper's choices: the other families' settings are theirs
            for name, paper in (("positions", "sinusoidal"), ("activation", "relu"), ("init", "xavier")):
                if getattr(self, name) != paper:
                    raise UserError(f"--{name} {getattr(self, name)} is for the other families; the "
                                    f"encoder-decoder uses the paper's {paper}")  # fmt: skip
        if self.arch in ENCODER_ONLY and self.positions == "rotary":
            raise UserError(
                f"--arch {self.arch} adds learned or sinusoidal positions; rotary is for --arch gpt"
            )
        if self.embedding_norm and self.arch not in ENCODER_ONLY:
            raise UserError("--embedding_norm is for the encoder-only families (--arch bert or vit)")
        if self.pooling != "cls" and self.arch != "bert":
            raise UserError("--pooling is for --arch bert (a ViT reads its [CLS] token)")
        if self.patch_size != 2 and self.arch != "vit":
            raise UserError("--patch_size is for --arch vit")
        if self.positions == "rotary" and self.hidden_size // self.num_heads % 2:
            width = self.hidden_size // self.num_heads
            raise UserError(f"rotary positions turn pairs of dimensions: the head width {width} "
                            "(hidden_size / num_heads) must be even")  # fmt: skip

    @classmethod
    def names(cls, training_only: bool | None = None) -> list[str]:
        """The field names; `training_only=False`: those that shape the weights; True: the others."""
        fields = dataclasses.fields(ModelShape)
        return [f.name for f in fields if training_only in (None, bool(f.metadata.get("training_only")))]

    def shape(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ModelShape.names()}


@dataclass
class ModelConfig(ModelShape):
    """The architecture of the encoder-decoder Transformer: its shape and its vocabularies."""

    src_vocab_size: int = field(kw_only=True)  # size of the source token set
    tgt_vocab_size: int = field(kw_only=True)  # size of the target token set
    max_position: int = field(default=256, kw_only=True)  # longest sequence the position table covers
    share_embeddings: bool = field(default=False, kw_only=True)  # also share src/tgt embeddings (one vocab)
    pad_id: int = field(default=0, kw_only=True)
    bos_id: int = field(default=1, kw_only=True)
    eos_id: int = field(default=2, kw_only=True)
    # encoder-only: the classes of a classification head, by id (HF's id2label); none: BERT's masked LM
    labels: tuple[str, ...] = field(default=(), kw_only=True)
    mask_id: int = field(default=-1, kw_only=True)  # BERT's [MASK] (-1: none), [CLS] begins every input
    cls_id: int = field(default=-1, kw_only=True)
    image_size: int = field(default=0, kw_only=True)  # ViT: the images' side in pixels
    channels: int = field(default=0, kw_only=True)  # ViT: colour channels (1: grey)
    # The paper lab's ablations (pytorch_version/lab), not flags: each default is the model as the paper
    # and the families build it, and the lab changes one at a time to measure what that part does.
    # The speed-ups of utils/fast know only the defaults, so the lab trains the readable model alone.
    residual: bool = field(default=True, kw_only=True)  # Add & Norm's "x +" (section 3.1; He et al. 2016)
    # a gated FFN (Shazeer 2020, "GLU Variants"): (act(x W1) * x V) W2, a second input projection V
    ffn_gate: bool = field(default=False, kw_only=True)
    # stochastic depth (Huang et al. 2016; LayerDrop, Fan et al. 2019): in training each layer of a stack
    # is skipped with this probability, its input passed on unchanged; every layer runs at evaluation
    layer_drop: float = field(default=0.0, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("src_vocab_size", "tgt_vocab_size", "max_position"):
            require_positive(name, getattr(self, name))
        if self.arch == "gpt" and self.src_vocab_size != self.tgt_vocab_size:
            sizes = f"src_vocab_size={self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}"
            raise UserError(f"a GPT reads and writes one vocabulary, got {sizes}")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise UserError(
                "share_embeddings needs one vocabulary, got "
                f"src_vocab_size={self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}"
            )
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < self.tgt_vocab_size:
                raise UserError(f"{name} must be an id in [0, {self.tgt_vocab_size}), got {value!r}")
        self.labels = tuple(self.labels)  # a list after JSON
        if self.arch == "vit":
            for name in ("image_size", "channels"):
                require_positive(name, getattr(self, name))
            if self.image_size % self.patch_size:
                raise UserError(f"patch_size {self.patch_size} must divide the image side {self.image_size}")
        if isinstance(self.layer_drop, bool) or not 0.0 <= self.layer_drop < 1.0:
            raise UserError(f"layer_drop must be in [0, 1), got {self.layer_drop!r}")
        if self.arch == "vit" and not self.labels:
            raise UserError("a ViT classifies images: it needs the labels of its classes")

    def ablations(self) -> list[str]:
        """The lab's switches this config changes from the built model's (LAB_FIELDS), as `name=value`."""
        fields = ModelConfig.__dataclass_fields__
        return [f"{n}={getattr(self, n)!r}" for n in LAB_FIELDS if getattr(self, n) != fields[n].default]

    @property
    def num_labels(self) -> int:
        """Classes of a classification head; 0: BERT's masked-LM head."""
        return len(self.labels)

    @property
    def num_patches(self) -> int:
        """ViT: the tokens of one image besides [CLS]."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def vocab_size(self) -> int:
        """The output vocabulary (a GPT's only one)."""
        return self.tgt_vocab_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
