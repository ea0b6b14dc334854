"""utils/fast: each speed-up equals the readable computation it replaces, enters at its seam only,
and `--no-fast` trains on the plain readable path with none of them."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import COPY_RUN, ROOT, tiny_config, tiny_pytorch
from utils.fast import SpeedUps, packing
from utils.fast.kv_cache import GrowingKVCache
from utils.observe.tracing import capture
from utils.runtime.config import RunConfig


@pytest.fixture
def padded_batch():
    """Sources and shifted targets with padding of different lengths, and the labelled positions."""
    g = torch.Generator().manual_seed(3)
    src = torch.randint(4, 30, (5, 9), generator=g)
    tgt = torch.randint(4, 30, (5, 7), generator=g)
    tgt[:, 0] = 1
    for row, (s, t) in enumerate([(9, 7), (4, 3), (2, 5), (6, 1), (9, 2)]):
        src[row, s:], tgt[row, t:] = 0, 0
    labelled = tgt != 0
    labelled[3, 1] = True  # a label where the decoder input is padding: that row must be computed too
    return src, tgt, labelled


@pytest.fixture
def count_packings(monkeypatch):
    """The keep-masks of every Packing built: two per packed training step (source, target)."""
    calls = []
    original = packing.Packing.__init__

    def spy(self, keep):
        calls.append(keep.clone())
        original(self, keep)

    monkeypatch.setattr(packing.Packing, "__init__", spy)
    return calls


def test_pack_unpack_and_select_invert_each_other_on_the_kept_positions():
    keep = torch.tensor([[True, True, False], [True, False, False], [True, True, True]])
    x = torch.randn(3, 3, 4)
    p = packing.Packing(keep)
    rows = p.pack(x)
    assert rows.shape == (6, 4)
    torch.testing.assert_close(rows, x[keep])  # the same order as boolean indexing
    back = p.unpack(rows)
    torch.testing.assert_close(back[keep], x[keep])
    assert back[~keep].abs().sum() == 0  # zeros where the padding was
    labelled = keep & torch.tensor([[False, True, True], [True, True, True], [True, False, True]])
    torch.testing.assert_close(p.select(rows, labelled), x[labelled])


def _logits_and_grads(model, call):
    model.zero_grad()
    logits = call()
    logits.square().sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)
    assert a[1].keys() == b[1].keys()
    scale = max(float(g.abs().max()) for g in b[1].values())  # float rounding of sums in another order
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], atol=1e-6 * scale, rtol=1e-4, msg=name)


@pytest.mark.parametrize("norm_first", [False, True])
def test_packed_rows_give_the_readable_logits_and_gradients_pytorch(padded_batch, count_packings, norm_first):
    from pytorch_version.model import Transformer

    src, tgt, labelled = padded_batch
    torch.manual_seed(0)
    model = Transformer(tiny_config(norm_first=norm_first)).train()  # training mode, dropout 0
    packed = _logits_and_grads(model, lambda: packing.LabelledLogits(model, 0)(src, tgt, labelled))
    assert len(count_packings) == 2
    readable = _logits_and_grads(model, lambda: model(src, tgt)[labelled])
    assert packed[0].shape == (int(labelled.sum()), 30)
    _assert_same(packed, readable)
    off = _logits_and_grads(model, lambda: packing.LabelledLogits(model, 0, packed=False)(src, tgt, labelled))
    assert len(count_packings) == 2, "packed=False (--no-fast) must not pack"
    _assert_same(off, readable)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_packed_rows_give_the_readable_logits_and_gradients_hf(
    padded_batch, count_packings, attn, norm_first
):
    from huggingface_version.convert import pytorch_to_hf
    from pytorch_version.model import Transformer

    src, tgt, labelled = padded_batch
    torch.manual_seed(0)
    reference = Transformer(tiny_config(norm_first=norm_first))
    expected = _logits_and_grads(reference, lambda: reference(src, tgt)[labelled])
    model = pytorch_to_hf(reference).train()
    model.set_attn_implementation(attn)
    readable = lambda: model(input_ids=src, decoder_input_ids=tgt, logits_to_keep=labelled).logits
    results = [_logits_and_grads(model, lambda: packing.LabelledLogits(model, 0)(src, tgt, labelled))]
    assert len(count_packings) == 2
    results.append(_logits_and_grads(model, readable))
    _assert_same(*results)
    torch.testing.assert_close(results[0][0], expected[0], atol=1e-5, rtol=1e-5)


def test_nothing_is_packed_while_something_watches(padded_batch, count_packings):
    from huggingface_version.convert import pytorch_to_hf
    from huggingface_version.hooks import record_activations
    from pytorch_version.model import Transformer

    src, tgt, labelled = padded_batch
    torch.manual_seed(0)
    model = Transformer(tiny_config()).eval()
    step = packing.LabelledLogits(model, 0)
    with capture(model, "*.ffn.*") as cache:  # a capture point listens: it must see (B, T, ...) tensors
        assert "forward hook" in packing.why_not_packed(model)
        traced = step(src, tgt, labelled)
    assert not count_packings and cache["encoder.0.ffn.out"].shape[:2] == src.shape
    torch.testing.assert_close(traced, step(src, tgt, labelled), atol=1e-5, rtol=1e-5)
    assert len(count_packings) == 2 and packing.why_not_packed(model) is None
    hf = pytorch_to_hf(model).eval()
    count_packings.clear()
    with record_activations(hf, "*.ffn.*") as cache:
        assert "forward hook" in packing.why_not_packed(hf)
        packing.LabelledLogits(hf, 0)(src, tgt, labelled)
    assert cache and not count_packings


def test_global_and_backward_hooks_also_keep_the_step_on_the_readable_path(padded_batch, count_packings):
    from pytorch_version.model import Transformer

    src, tgt, labelled = padded_batch
    model = Transformer(tiny_config()).train()
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        assert "global" in packing.why_not_packed(model)
        packing.LabelledLogits(model, 0)(src, tgt, labelled)
    finally:
        handle.remove()
    assert not count_packings and (*src.shape, 32) in seen  # the hook saw (B, T, D), not packed rows
    handle = model.encoder.layers[0].register_full_backward_hook(lambda m, gi, go: None)
    assert "backward hook" in packing.why_not_packed(model)
    handle.remove()
    assert packing.why_not_packed(model) is None


@pytest.mark.parametrize("fast", [True, False])
def test_both_trainers_take_the_packed_path_unless_no_fast(tmp_path, count_packings, single_thread, fast):
    """A real training step of each version packs its batches with --fast (the default) and learns;
    --no-fast packs nothing, swaps no module and builds the plain (not fused) Adam."""
    import pytorch_version.train as pt_train
    from huggingface_version.train import train_huggingface
    from utils.fast.dropout import Dropout
    from utils.fast.output_layer import OutputLinear

    adams = []
    original_adam = pt_train.optimizer_and_schedule
    models = []
    original_build = pt_train.build_model

    def spy_adam(cfg, model, total_steps, fused=False):
        adams.append(fused)
        return original_adam(cfg, model, total_steps, fused)

    def spy_build(*args):
        models.append(original_build(*args))
        return models[-1]

    settings = {**COPY_RUN, "epochs": 2, "train_size": 256, "eval_size": 32, "output_dir": str(tmp_path),
                "fast": fast, "dropout": 0.1}  # fmt: skip
    with pytest.MonkeyPatch.context() as m:
        m.setattr(pt_train, "optimizer_and_schedule", spy_adam)
        m.setattr(pt_train, "build_model", spy_build)
        summary = pt_train.train(RunConfig(**settings))
    batches = 256 // COPY_RUN["batch_size"] * 2
    assert len(count_packings) == (2 * batches if fast else 0)
    assert adams == [fast]
    swapped = [type(x) for x in models[0].modules() if isinstance(x, (Dropout, OutputLinear))]
    assert bool(swapped) == fast and (models[0].cache_class is GrowingKVCache) == fast
    history = [json.loads(line) for line in (tmp_path / "results_pytorch/logs/metrics.jsonl").open()]
    assert summary["last_epoch"]["eval_loss"] < history[0]["eval_loss"] - 0.3
    count_packings.clear()
    train_huggingface(RunConfig(**{**settings, "version": "huggingface"}))
    assert len(count_packings) == (2 * batches if fast else 0)


def test_the_growing_kv_cache_equals_the_readable_one_step_by_step():
    from pytorch_version.attention import KVCache

    g = torch.Generator().manual_seed(0)
    readable, growing = KVCache(), GrowingKVCache()
    handed_out = []
    for step in range(40):  # the buffer grows twice (16 -> 34 -> 70)
        k, v = torch.randn(3, 2, 1, 4, generator=g), torch.randn(3, 2, 1, 4, generator=g)
        a, b = readable.append("0.self", k, v), growing.append("0.self", k, v)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        handed_out.append((b[0].clone(), b[0]))
        if step % 7 == 6:
            order = torch.tensor([2, 0, 0])
            readable.reorder(order)
            growing.reorder(order)
    assert len(readable) == len(growing) == 40
    assert all(torch.equal(before, view) for before, view in handed_out), "a handed-out view changed"


def test_decoding_with_every_speed_up_gives_the_readable_tokens():
    from huggingface_version.convert import pytorch_to_hf
    from pytorch_version.decoding import beam_search, greedy_decode
    from pytorch_version.model import Transformer

    torch.manual_seed(0)
    model = Transformer(tiny_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # sharper than the init, so decoding branches and stops at different lengths
    src = torch.randint(4, 30, (6, 9))
    hf = pytorch_to_hf(model).eval()
    kwargs = dict(input_ids=src, attention_mask=(src != 0).long(), max_new_tokens=12, num_beams=3)
    expected = (
        greedy_decode(model, src, 12),
        beam_search(model, src, 3, 12).sequences,
        hf.generate(**kwargs),
    )
    for m in (model, hf):
        SpeedUps().plug_in(m)
    got = (greedy_decode(model, src, 12), beam_search(model, src, 3, 12).sequences, hf.generate(**kwargs))
    for a, b in zip(expected, got):
        assert torch.equal(a, b)


def test_every_piece_is_named_once_and_none_plugs_in_nothing():
    from pytorch_version.model import Transformer

    assert SpeedUps.names() == ["packed_rows", "fast_dropout", "packed_output_layer", "written_down_loss",
                                "growing_kv_cache", "fused_adam", "float32_attention"]  # fmt: skip
    model = Transformer(tiny_config(dropout=0.1))
    types = [type(m) for m in model.modules()]
    SpeedUps.none().plug_in(model)
    assert [type(m) for m in model.modules()] == types and "cache_class" not in vars(model)
    assert {getattr(m, "attention_function", "sdpa") for m in model.modules()} == {"sdpa"}  # torch's kernel
    for name in SpeedUps.names():
        on = SpeedUps.only(name)
        assert [n for n in SpeedUps.names() if getattr(on, n)] == [name]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def test_the_readable_path_imports_no_speed_up_and_the_hf_model_files_only_torch_and_transformers():
    for name in ("attention", "positions", "layers", "model", "gpt"):
        imported = _imports(ROOT / "pytorch_version" / f"{name}.py")
        allowed = {"__future__", "math", "collections.abc", "torch", "torch.nn.functional", "torch.nn",
                   "pytorch_version.attention", "pytorch_version.positions", "pytorch_version.layers",
                   "pytorch_version.model", "utils.observe.tracing", "utils.runtime.config"}  # fmt: skip
        assert imported <= allowed, (name, imported - allowed)
    for name in (
        "configuration",
        "attention",
        "layers",
        "stacks",
        "modeling",
        "configuration_gpt",
        "modeling_gpt",
    ):
        imported = _imports(ROOT / "huggingface_version" / f"{name}.py")
        foreign = {
            m
            for m in imported
            if m.split(".")[0]
            not in ("__future__", "typing", "math", "dataclasses", "collections", "torch", "transformers", "")
        }
        assert not foreign, (name, foreign)


def test_float32_attention_computes_the_attention_in_float32_under_cpu_bf16_autocast():
    """The piece: outside bf16 autocast torch's kernel itself (bitwise); inside, the float32 result
    cast to bfloat16, gradients included; and plugged into every MultiHeadAttention of a model."""
    from pytorch_version.attention import ATTENTION_FUNCTIONS, MultiHeadAttention
    from utils.fast.attention import FLOAT32_UNDER_BF16, attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g, requires_grad=True) for _ in range(3))
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(attention(q, k, v, attn_mask=mask), exact)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), attn_mask=mask)
    assert z.dtype == torch.bfloat16
    ups = [x.bfloat16().float() for x in (q, k, v)]  # the inputs as bf16 holds them, computed in float32
    expected = torch.nn.functional.scaled_dot_product_attention(*ups, attn_mask=mask).bfloat16()
    assert torch.equal(z, expected)
    z.float().sum().backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in (q, k, v))
    model = SpeedUps.only("float32_attention").plug_in(tiny_pytorch())
    names = {m.attention_function for m in model.modules() if isinstance(m, MultiHeadAttention)}
    assert names == {FLOAT32_UNDER_BF16} and ATTENTION_FUNCTIONS[FLOAT32_UNDER_BF16] is attention
