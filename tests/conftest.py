"""Shared fixtures: tiny configs, in the style of HF's model testers (hidden 32, 2 layers, 4 heads)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from pytorch_version.model import Transformer
from utils.config import ModelConfig


def tiny_config(**overrides) -> ModelConfig:
    values = dict(src_vocab_size=30, tgt_vocab_size=30, hidden_size=32, num_layers=2,
                  num_heads=4, ffn_size=64, dropout=0.0)  # fmt: skip
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture
def tiny_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(tiny_config()).eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A source batch with padding in row 0 and a BOS-led target batch."""
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 30, (3, 7), generator=g)
    src[0, 5:] = 0
    tgt = torch.randint(4, 30, (3, 6), generator=g)
    tgt[:, 0] = 1
    return src, tgt
