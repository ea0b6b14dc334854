"""The encoder-only training step's twin: a masked LM's head on the masked rows only.

BERT's masked LM is scored at the 15% of positions that were chosen (utils/data/masking.py), yet
its readable forward runs the prediction head (a D x D Linear, GELU, LayerNorm and the D x V
output layer, the largest matmul of a small model) on every position. The twin runs the model's
own encoder and then its own head on the chosen rows alone: the same numbers at those rows, about
a seventh of the head's work. A classifier's head already reads one vector per sequence, so its
step is the readable forward. tests/fast/test_encoder_only.py holds the twin equal in values and
gradients.
"""

from __future__ import annotations

import torch


def encoder_only_logits(
    model, src: torch.Tensor, labelled: torch.Tensor, packed: bool = True
) -> torch.Tensor:
    """(N, V) masked-LM logits at the `labelled` positions, or (B, C) class logits, of either version's
    model (huggingface_version's by its readable forward)."""
    if hasattr(model, "run_with_cache"):  # pytorch_version
        if not packed or model.config.num_labels:
            return model(src)[labelled]
        return model.head(model.encode(src)[labelled])
    if src.dtype.is_floating_point:  # an HF image classifier
        return model(pixel_values=src).logits[labelled]
    real = (src != model.config.pad_token_id).long()
    return model(input_ids=src, attention_mask=real).logits[labelled]
