"""Checks of the Hugging Face model for `python main.py --version test` (append HF_CHECKS to
selfcheck.CHECKS). Each builds tiny models, compares what must agree and returns a one-line detail."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from huggingface_version.convert import pytorch_to_hf
from huggingface_version.hooks import hook_count, run_with_cache
from pytorch_version.decoding import greedy_decode
from pytorch_version.model import Transformer
from utils.runtime.config import ModelConfig, RunConfig


def _twins(std: float = 0.0, **overrides):
    torch.manual_seed(0)
    cfg = dict(src_vocab_size=30, tgt_vocab_size=30, hidden_size=32, num_layers=2, num_heads=4,
               ffn_size=64, dropout=0.0) | overrides  # fmt: skip
    pt = Transformer(ModelConfig(**cfg)).eval()
    if std:  # sharper than the init, so decoding branches and stops
        with torch.no_grad():
            for p in pt.parameters():
                if p.dim() == 2:
                    p.normal_(0, std)
    return pt, pytorch_to_hf(pt).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 30, (8, 7), generator=g)
    src[::3, 5:] = 0
    tgt = torch.randint(4, 30, (8, 6), generator=g)
    tgt[:, 0] = 1
    return src, tgt


@torch.no_grad()
def check_converted_logits() -> str:
    worst = 0.0
    for norm_first in (False, True):
        pt, hf = _twins(norm_first=norm_first)
        src, tgt = _batch()
        diff = pt(src, tgt) - hf(input_ids=src, decoder_input_ids=tgt).logits
        worst = max(worst, diff.abs().max().item())
    assert worst < 1e-5, f"max |logit difference| {worst:.1e}"
    return f"max |pytorch - huggingface| = {worst:.1e} (post-LN and pre-LN)"


def check_greedy_generate() -> str:
    pt, hf = _twins(std=0.5)
    src, _ = _batch()
    ours, theirs = greedy_decode(pt, src, 12), hf.generate(src, max_new_tokens=12)[:, 1:]
    width = max(ours.size(1), theirs.size(1))
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.size(1)))
    assert torch.equal(pad(ours), pad(theirs)), "greedy outputs differ"
    for beams in (1, 4):  # min_new_tokens: whole sequences, not an early EOS, so every step counts
        run = partial(hf.generate, src, max_new_tokens=12, min_new_tokens=12, num_beams=beams)
        assert torch.equal(run(), run(use_cache=False)), f"{beams} beam(s): cached != uncached"
    return "generate == pytorch greedy; greedy and beam search cached == uncached"


def check_hook_cache() -> str:
    pt, hf = _twins()
    src, tgt = _batch()
    _, expected = pt.run_with_cache(src, tgt)
    _, got = run_with_cache(hf, src, tgt)
    assert list(got) == list(expected), "cache names differ"
    worst = max((got[k] - v).nan_to_num(0, 0, 0).abs().max().item() for k, v in expected.items())
    assert worst < 1e-4 and hook_count(hf) == 0, f"max difference {worst:.1e}"
    return f"{len(got)} cache entries equal pytorch's (max diff {worst:.1e}); no hooks left"


def check_save_and_learn() -> str:
    from transformers import AutoModelForSeq2SeqLM

    from huggingface_version.train import train_huggingface

    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(version="huggingface", task="copy", device="cpu", train_size=1000,
                        eval_size=32, min_len=2, max_len=4, hidden_size=32, ffn_size=64, dropout=0.0,
                        epochs=4, batch_size=32, warmup_steps=60, output_dir=tmp, quiet=True)  # fmt: skip
        summary = train_huggingface(cfg)
        folder = Path(tmp) / "results_huggingface"
        _, info = AutoModelForSeq2SeqLM.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    records = summary["final"]
    assert records["eval_token_accuracy"] > 0.45, f"token accuracy {records['eval_token_accuracy']:.2f}"
    return f"Trainer run: token accuracy {records['eval_token_accuracy']:.2f}; reloads with no missing keys"


HF_CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("huggingface: converted weights, same logits", check_converted_logits),
    ("huggingface: generate vs pytorch greedy", check_greedy_generate),
    ("huggingface: hook cache vs pytorch cache", check_hook_cache),
    ("huggingface: Trainer run + from_pretrained", check_save_and_learn),
]
