"""`python main.py --version test`: a one-minute self-check of the models on this machine.

Each check builds tiny models, runs them, and compares what must agree. The table it
prints says what passed; the exit code is 0 only if everything did.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from pytorch_version.decoding import beam_search, greedy_decode
from pytorch_version.families import model_for
from pytorch_version.inference import load_for_inference
from pytorch_version.model import TutorialModel
from pytorch_version.sampling import sample
from utils.data.tasks import PairDataset, make_loader, make_toy_task, tokenizer_for_task
from utils.runtime.checkpoint import save_checkpoint
from utils.runtime.config import ModelConfig
from utils.training.recipe import noam_schedule, seq2seq_loss

GPT = dict(arch="gpt", positions="rotary", activation="gelu", init="gpt2", norm_first=True)


def _tiny(**overrides) -> TutorialModel:
    torch.manual_seed(0)
    cfg = dict(src_vocab_size=30, tgt_vocab_size=30, hidden_size=32, num_layers=2, num_heads=4,
               ffn_size=64, dropout=0.0) | overrides  # fmt: skip
    return model_for(ModelConfig(**cfg)).eval()


def _batch(vocab: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, vocab, (3, 7), generator=g)
    src[0, 5:] = 0  # padding
    tgt = torch.randint(4, vocab, (3, 6), generator=g)
    tgt[:, 0] = 1
    return src, tgt


def check_forward_backward() -> str:
    model = _tiny().train()
    src, tgt = _batch()
    loss = seq2seq_loss(model(src, tgt), tgt, 0, 0.1)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:3]}"
    return f"loss {loss.item():.3f}, every parameter has a gradient"


def check_fused_vs_explicit() -> str:
    for norm_first in (False, True):
        model = _tiny(norm_first=norm_first)
        src, tgt = _batch()
        fused = model(src, tgt)
        model.set_explicit_attention(True)
        explicit = model(src, tgt)
        diff = (fused - explicit).abs().max().item()
        assert diff < 1e-5, f"max difference {diff:.2e} (norm_first={norm_first})"
    return f"max |fused - explicit| = {diff:.1e}"


def check_cached_decoding() -> str:
    model = _tiny()
    src, _ = _batch()
    cached = greedy_decode(model, src, 12, use_cache=True)
    full = greedy_decode(model, src, 12, use_cache=False)
    assert torch.equal(cached, full), "cached and uncached greedy decoding differ"
    beam1 = beam_search(model, src, 1, 12).best
    assert torch.equal(beam1[:, : cached.size(1)], cached), "beam search with 1 beam differs from greedy"
    beams = beam_search(model, src, 4, 12)
    assert torch.equal(beams.sequences, beam_search(model, src, 4, 12, use_cache=False).sequences)
    return "greedy cached == full, beam(1) == greedy, beam(4) cached == full"


def check_gpt_causal_and_cached() -> str:
    model = _tiny(**GPT)
    tokens = torch.randint(4, 30, (2, 12), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[:, 8] = 4 + (changed[:, 8] - 3) % 26
    before, after = model.forward_tokens(tokens), model.forward_tokens(changed)
    assert torch.equal(before[:, :8], after[:, :8]), "a later token changed an earlier logit"
    src, _ = _batch()
    assert torch.equal(greedy_decode(model, src, 10), greedy_decode(model, src, 10, use_cache=False))
    draws = [sample(model, [5, 6, 7], 20, seed=3) for _ in range(2)]
    assert draws[0] == draws[1], "the same seed sampled different tokens"
    return "no look-ahead, greedy cached == full, seeded sampling reproducible"


BERT = dict(arch="bert", positions="learned", activation="gelu", init="normal", embedding_norm=True)
VIT = dict(arch="vit", positions="learned", activation="gelu", init="normal", norm_first=True,
           src_vocab_size=1, tgt_vocab_size=1, bos_id=0, eos_id=0, labels=tuple("0123456789"),
           image_size=8, channels=1)  # fmt: skip


def check_bert_bidirectional_and_traced() -> str:
    """No look-ahead (a later token changes an earlier output), padding ignored, the observation layer
    reads it as encoder-only (from the model and from the cache) and traces its masked-LM head."""
    from utils.observe.family import ENCODER_ONLY, family_of
    from utils.observe.trace_printer import trace_example

    model, none = _tiny(**BERT, mask_id=6, cls_id=4), torch.zeros(1, 0, dtype=torch.long)
    ids = torch.tensor([[4, 8, 9, 6, 10, 11, 5]])  # [CLS] . . [MASK] . . [SEP]
    changed = ids.clone()
    changed[0, 5] = 12
    before, after = model(ids), model(changed)
    assert not torch.allclose(before[:, 1], after[:, 1]), "a later token left an earlier output unchanged"
    padded = model(torch.cat([ids, torch.zeros(1, 2, dtype=torch.long)], dim=1))
    torch.testing.assert_close(padded[:, :7], before, atol=1e-5, rtol=1e-5)
    _, cache = model.run_with_cache(ids, none)
    assert family_of(model=model) is ENCODER_ONLY and family_of(cache) is ENCODER_ONLY
    text = trace_example(model, ids, none, lambda row: [f"t{i}" if i != 6 else "[MASK]" for i in row])
    assert "ENCODER-ONLY MODEL" in text and "position   3 [MASK] ->" in text and "Decoder" not in text
    return "sees both sides, padding ignored, traced as encoder-only with its [MASK] guess"


def check_vit_patches_and_traced() -> str:
    """The patch embedding is each patch's pixels times one matrix; the trace and the analysis read it."""
    from utils.observe.analysis import TransformerAnalyzer
    from utils.observe.trace_printer import trace_example

    model = _tiny(**VIT)
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    none = torch.zeros(2, 0, dtype=torch.long)
    w = model.patch_embed.projection.weight  # (D, C, P, P)
    patches = images.unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 16, 4)  # row by row, P x P pixels each
    by_hand = patches @ w.reshape(w.size(0), -1).T + model.patch_embed.projection.bias
    torch.testing.assert_close(model.patch_embed(images), by_hand, atol=1e-5, rtol=1e-5)
    names = ["[CLS]", *(f"r{r}c{c}" for r in range(4) for c in range(4))]
    text = trace_example(model, images, none, lambda _: names)
    assert "[CLS] -> itself" in text and "class probabilities" in text and "Final LayerNorm" in text
    report = TransformerAnalyzer(model).comprehensive_analysis(images, none, labels=torch.tensor([3, 5]))
    assert report["family"] == "encoder-only" and "patch_embedding" in report["encoder_only"]
    return "patch embedding == pixels x matrix, traced and analysed as encoder-only"


def check_learns_copy() -> str:
    torch.manual_seed(0)
    train_pairs, _ = make_toy_task("copy", 512, 1, seed=0, min_len=3, max_len=6)
    tok = tokenizer_for_task("copy")
    model = _tiny(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size).train()
    opt = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, noam_schedule(32, 50, 0.5))
    losses = []
    for _ in range(6):
        for batch in make_loader(PairDataset(train_pairs, tok), 32, True, 0):
            loss = seq2seq_loss(model(batch["src"], batch["tgt_in"]), batch["tgt_out"], 0, 0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"loss went {losses[0]:.2f} -> {losses[-1]:.2f}"
    return f"loss {losses[0]:.2f} -> {losses[-1]:.2f} in {len(losses)} steps"


def check_checkpoint_roundtrip() -> str:
    model = _tiny(src_vocab_size=30, tgt_vocab_size=30)
    src, tgt = _batch()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        save_checkpoint(path, model, tokenizer_for_task("copy"))
        loaded, _, _ = load_for_inference(path)
    assert torch.equal(model(src, tgt), loaded(src, tgt)), "logits differ after reload"
    return "identical logits after save -> load"


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("pytorch: forward + backward", check_forward_backward),
    ("pytorch: fused vs explicit attention", check_fused_vs_explicit),
    ("pytorch: cached vs full decoding", check_cached_decoding),
    ("pytorch: learns the copy task", check_learns_copy),
    ("pytorch: GPT causal, cached, seeded", check_gpt_causal_and_cached),
    ("pytorch: BERT bidirectional, traced", check_bert_bidirectional_and_traced),
    ("pytorch: ViT patches, traced, analysed", check_vit_patches_and_traced),
    ("pytorch: checkpoint round-trip", check_checkpoint_roundtrip),
]


def run_selfcheck(checks=None) -> int:
    if checks is None:
        from huggingface_version.selfcheck import HF_CHECKS

        checks = CHECKS + HF_CHECKS
    rows, failed = [], 0
    for name, check in checks:
        start = time.perf_counter()
        try:
            status, detail = "PASS", check()
        except Exception as err:  # a self-check reports failures instead of stopping
            status, detail = "FAIL", f"{type(err).__name__}: {err}"
            failed += 1
            traceback.print_exc()
        rows.append((status, name, f"{time.perf_counter() - start:.1f}s", detail))
    width = max(len(r[1]) for r in rows)
    print(f"\n{'result':6}  {'check':{width}}  {'time':>6}  detail")
    for status, name, seconds, detail in rows:
        print(f"{status:6}  {name:{width}}  {seconds:>6}  {detail}")
    print(f"\n{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0
