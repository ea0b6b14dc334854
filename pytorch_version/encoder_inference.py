"""--checkpoint PATH --source INPUT with an encoder-only model: it reads, it does not write.

    BERT classifier   --source "abcba"             the class and each class's probability
    BERT masked LM    --source "to be or [MASK]ot"  every [MASK] filled in, with its 3 likeliest tokens
    ViT               --source digit.png           the image read as the digits are (grey, 8 x 8, 16
                                                   levels), and the class probabilities

`read` has the signature of pytorch_version.inference.translate, so commands/decode.py serves these
models (and --interactive, a line each) as it serves the others; `read_example` gives the forward
pass that --debug traces and --explore draws.
"""

from __future__ import annotations

from pathlib import Path

import torch

from utils.runtime.config import UserError

MASK = "[MASK]"


def encode_input(model, tokenizer, text: str) -> torch.Tensor:
    """The (1, S) ids (BERT: [CLS] text [SEP], each written [MASK] one token) or (1, C, H, W) image."""
    cfg = model.config
    if cfg.arch == "vit":
        return read_image(text, cfg.image_size, cfg.channels)
    pieces = text.split(MASK)
    ids = [tokenizer.cls_id]
    for i, piece in enumerate(pieces):
        ids += tokenizer.encode(piece, add_eos=False) + ([tokenizer.mask_id] if i < len(pieces) - 1 else [])
    ids.append(tokenizer.sep_id)
    if len(ids) > cfg.max_position:
        raise UserError(f"--source is {len(ids)} tokens with [CLS] and [SEP]; this model reads at most "
                        f"{cfg.max_position}")  # fmt: skip
    if not cfg.num_labels and tokenizer.mask_id not in ids:
        raise UserError(f"a masked LM fills in {MASK}: write it in --source where a character is hidden, "
                        "e.g. 'to be or [MASK]ot to be'")  # fmt: skip
    return torch.tensor([ids])


def read_image(path: str, size: int, channels: int) -> torch.Tensor:
    """An image file as the digits are read: grey (or RGB), size x size, 16 grey levels in [0, 1]."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(Path(path)) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((size, size))
            pixels = torch.tensor(np.asarray(image), dtype=torch.float32)  # (size, size[, 3])
    except (OSError, UnidentifiedImageError) as err:
        raise UserError(f"--source {path}: a ViT reads an image file (PNG, JPEG, ...): {err}") from err
    pixels = (pixels / 255 * 16).round() / 16  # the digits' 16 grey levels
    return pixels.view(size, size, channels).permute(2, 0, 1).unsqueeze(0)


@torch.no_grad()
def read(model, tokenizer, texts: list[str], *unused) -> list[str]:
    """Each input's answer as a line of text (beam size, length penalty and length do not apply)."""
    model.eval()
    device = next(model.parameters()).device
    answers = []
    for text in texts:
        src = encode_input(model, tokenizer, text).to(device)
        logits = model(src)[0].float()
        if model.config.num_labels:  # a class: the likeliest, then every class's probability
            p = logits.softmax(-1)
            labels = model.config.labels
            ranked = ", ".join(f"{labels[i]} {p[i]:.3f}" for i in p.argsort(descending=True).tolist())
            answers.append(f"{labels[int(p.argmax())]} ({ranked})")
        else:  # the text with every [MASK] filled by its likeliest token
            answers.append(_filled(src[0], logits, tokenizer))
    return answers


def _filled(ids: torch.Tensor, logits: torch.Tensor, tokenizer) -> str:
    out, guesses = [], []
    for position, token in enumerate(ids.tolist()):
        if token == tokenizer.mask_id:
            top = logits[position].softmax(-1).topk(3)
            best = tokenizer.id_to_token[int(top.indices[0])]
            out.append(best)
            options = " ".join(f"{tokenizer.id_to_token[int(i)]!r} {float(p):.2f}" for p, i in zip(*top))
            guesses.append(f"[MASK] {len(guesses) + 1}: {options}")
        elif token >= len(tokenizer.specials):
            out.append(tokenizer.id_to_token[token])
    return "".join(out) + "   (" + "; ".join(guesses) + ")"


def read_example(model, tokenizer, text: str, output: str = "") -> tuple:
    """(src, tgt_in, to_tokens) of the forward pass that read `text` (--debug, --explore)."""
    src = encode_input(model, tokenizer, text).to(next(model.parameters()).device)
    return src, src.new_zeros(1, 0, dtype=torch.long), tokenizer.tokens
