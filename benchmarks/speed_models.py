"""The models and batches that benchmarks/speed.py measures, built with the same dimensions.

d_model 256, 3+3 layers, 8 heads, FFN 512, vocab 8000, batch 64, lengths up to 24 with
padding masks, dropout 0.1: ours, ours converted to the Hugging Face version,
torch.nn.Transformer with embeddings and an output layer, and transformers' Bart built from
a config (no download). `strip_capture_points` gives the baseline for the tracing cost.
"""

from __future__ import annotations

import math

import torch
from torch import nn

D, LAYERS, HEADS, FFN, VOCAB, BATCH, LEN = 256, 3, 8, 512, 8000, 64, 24
PAD, BOS, EOS = 0, 1, 2


def make_batch(seed: int = 0):
    """Random ids with random lengths 12..24: right padding on both sides."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, VOCAB, (BATCH, LEN), generator=g)
    tgt = torch.randint(4, VOCAB, (BATCH, LEN + 1), generator=g)
    tgt[:, 0] = BOS
    for row in range(BATCH):
        src[row, int(torch.randint(12, LEN + 1, (1,), generator=g)) :] = PAD
        tgt[row, int(torch.randint(13, LEN + 2, (1,), generator=g)) :] = PAD
    return src, tgt[:, :-1], tgt[:, 1:]


def ours(dropout=0.1, speed=None):
    """Ours as the toolkit trains and decodes it: with utils/fast's speed-ups (`speed`, default all)."""
    from pytorch_version.model import Transformer
    from utils.fast import SpeedUps
    from utils.runtime.config import ModelConfig

    cfg = ModelConfig(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, hidden_size=D, num_layers=LAYERS,
                      num_heads=HEADS, ffn_size=FFN, dropout=dropout, max_position=64)  # fmt: skip
    return (speed or SpeedUps()).plug_in(Transformer(cfg))


class TorchTransformer(nn.Module):
    """torch.nn.Transformer with embeddings x sqrt(d), sinusoidal positions and an output layer."""

    def __init__(self) -> None:
        super().__init__()
        from pytorch_version.layers import PositionalEncoding

        self.src_embed, self.tgt_embed = nn.Embedding(VOCAB, D), nn.Embedding(VOCAB, D)
        self.positions = PositionalEncoding(D, 64)
        self.core = nn.Transformer(D, HEADS, LAYERS, LAYERS, FFN, 0.1, batch_first=True)
        self.out = nn.Linear(D, VOCAB, bias=False)

    def forward(self, src, tgt):
        scale = math.sqrt(D)
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.size(1), dtype=torch.bool)
        h = self.core(
            self.positions(self.src_embed(src) * scale),
            self.positions(self.tgt_embed(tgt) * scale),
            tgt_mask=causal,
            src_key_padding_mask=src == PAD,
            tgt_key_padding_mask=tgt == PAD,
            memory_key_padding_mask=src == PAD,
        )
        return self.out(h)


def bart():
    from transformers import BartConfig, BartForConditionalGeneration

    cfg = BartConfig(vocab_size=VOCAB, d_model=D, encoder_layers=LAYERS, decoder_layers=LAYERS,
                     encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
                     encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, dropout=0.1, attention_dropout=0.0,
                     activation_dropout=0.0, activation_function="relu", max_position_embeddings=64,
                     scale_embedding=True, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
                     decoder_start_token_id=BOS, forced_eos_token_id=None)  # fmt: skip
    return BartForConditionalGeneration(cfg)


def hf_ours(speed=None):
    from huggingface_version.convert import pytorch_to_hf
    from utils.fast import SpeedUps

    return (speed or SpeedUps()).plug_in(pytorch_to_hf(ours(speed=SpeedUps.none())))


def logits_of(name, model, src, tgt):
    if name in ("ours", "torch.nn.Transformer"):
        return model(src, tgt)
    return model(input_ids=src, attention_mask=(src != PAD).long(), decoder_input_ids=tgt,
                 decoder_attention_mask=(tgt != PAD).long(), use_cache=False).logits  # fmt: skip


def training_loss(name, model, src, tgt_in, tgt_out, speed=None):
    """The mean label-smoothed loss as each toolkit's training step computes it: ours and its HF
    version through utils.fast.LabelledLogits and SpeedUps.loss_sum (packed rows of labelled
    positions and the written-down loss gradient unless `speed` turns them off), as both trainers
    do; the peers compute logits everywhere and go through F.cross_entropy with label smoothing,
    ignoring the padding."""
    from utils.fast import LabelledLogits, SpeedUps
    from utils.training.recipe import seq2seq_loss

    if name not in ("ours", "ours (HF)"):
        return seq2seq_loss(logits_of(name, model, src, tgt_in), tgt_out, PAD, 0.1)
    speed = speed or SpeedUps()
    keep = tgt_out != PAD
    logits = LabelledLogits(model, PAD, packed=speed.packed_rows)(src, tgt_in, keep)
    return speed.loss_sum()(logits, tgt_out[keep], 0.1) / keep.sum()


BUILDERS = {"ours": ours, "ours (HF)": hf_ours, "torch.nn.Transformer": TorchTransformer, "Bart": bart}


class _Identity:
    """A plain callable, not a module: what a model without capture points would do."""

    active = False

    def __call__(self, x):
        return x


def strip_capture_points(model):
    """The same model with every HookPoint replaced by a plain identity: no module call at all."""
    from utils.observe.tracing import HookPoint

    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, HookPoint):
                del module._modules[name]
                object.__setattr__(module, name, _Identity())
    return model
