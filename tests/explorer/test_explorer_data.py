"""explorer.html's data: every attention of the cache, bit for bit, for every family and both versions;
the page itself holds nothing that a browser would fetch; the size budget says what it dropped."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tests.factory import (
    tiny_bert,
    tiny_encoder_twins,
    tiny_gpt,
    tiny_gpt_twins,
    tiny_pytorch,
    tiny_twins,
    tiny_vit,
)
from utils.explorer.data import STEP_FIELDS, explorer_data, unpacked
from utils.explorer.page import explorer_html, write_explorer
from utils.observe.tracing import run_with_cache


def tokens(ids):
    return [f"t{int(i)}" for i in ids]


SRC = torch.tensor([[5, 6, 7, 8, 2]])
TGT = torch.tensor([[1, 9, 10, 11]])
IMAGE = torch.rand(1, 1, 8, 8)
EMPTY = torch.zeros(1, 0, dtype=torch.long)


def example_for(model):
    arch = getattr(model.config, "arch", "transformer")
    if arch == "vit":
        return IMAGE, EMPTY, lambda image: ["[CLS]", *(f"p{i}" for i in range(16))]
    return (SRC, EMPTY, tokens) if arch == "bert" else (SRC, TGT, tokens)


FAMILIES = {
    "transformer": (tiny_pytorch, {"encoder self-attention", "decoder self-attention", "cross-attention"}),
    "gpt": (tiny_gpt, {"decoder self-attention"}),
    "bert": (tiny_bert, {"encoder self-attention"}),
    "vit": (tiny_vit, {"encoder self-attention"}),
}


@pytest.mark.parametrize("arch", FAMILIES)
def test_every_attention_of_the_cache_is_on_the_page_bit_for_bit(arch):
    make, kinds = FAMILIES[arch]
    model = make()
    src, tgt, to_tokens = example_for(model)
    data = explorer_data(model, [(src, tgt, to_tokens)])
    _, cache = run_with_cache(model.eval(), src, tgt)
    assert {m["kind"] for m in data["modules"]} == kinds
    assert len(data["modules"]) == model.config.num_layers * len(kinds)
    assert data["tracked"] in {m["name"] for m in data["modules"]}
    for meta in data["modules"]:
        name, record = meta["name"], data["examples"][0]["modules"][meta["name"]]
        weights = torch.from_numpy(unpacked(record["weights"]))
        assert torch.equal(weights, cache[f"{name}.weights"][0].float())  # float32: the cache's own numbers
        assert torch.equal(torch.from_numpy(unpacked(record["scores"])), cache[f"{name}.scores"][0])
        T, S = weights.shape[-2:]
        assert len(record["rows"]) == T and len(record["cols"]) == S
        allowed = torch.tensor([[c == "1" for c in row] for row in record["allowed"]])
        if meta["kind"] == "decoder self-attention":  # the look-ahead mask of section 3.2.3
            assert torch.equal(allowed, torch.ones(T, S, dtype=torch.bool).tril(S - T))
        else:
            assert allowed.all()
        q = cache.get(f"{name}.q_rot", cache[f"{name}.q"])[0]  # a GPT's rotated q: its scores' q
        torch.testing.assert_close(torch.from_numpy(unpacked(record["q"])), q, atol=2e-3, rtol=1e-3)
        assert (
            len(record["pattern"]) == model.config.num_heads
            and len(record["entropy"]) == model.config.num_heads
        )
    if arch == "gpt":
        assert data["examples"][0]["modules"]["decoder.0.self_attn"]["rows"] == tokens(SRC[0]) + tokens(
            TGT[0]
        )
    if arch == "vit":
        assert data["examples"][0]["modules"]["encoder.0.self_attn"]["rows"][0] == "[CLS]"


@pytest.mark.parametrize(
    "twins",
    [tiny_twins, tiny_gpt_twins, lambda: tiny_encoder_twins("bert")],
    ids=["transformer", "gpt", "bert"],
)
def test_both_versions_give_the_same_page_for_converted_weights(twins):
    pt, hf = twins()
    example = example_for(pt)
    a, b = explorer_data(pt, [example]), explorer_data(hf, [example])
    assert a["modules"] == b["modules"] and a["family"] == b["family"] and a["d_k"] == b["d_k"]
    for name, record in a["examples"][0]["modules"].items():
        other = b["examples"][0]["modules"][name]
        assert record["rows"] == other["rows"] and record["allowed"] == other["allowed"]
        assert record["pattern"] == other["pattern"]
        for field in ("weights", "scores", *STEP_FIELDS):
            torch.testing.assert_close(unpacked(record[field]), unpacked(other[field]), atol=2e-3, rtol=1e-3)


def test_the_page_fetches_nothing_and_escapes_every_token(tmp_path):
    hostile = lambda ids: ["</script><script>alert(1)</script>", *tokens(ids[1:])]
    page = write_explorer(tiny_pytorch(), [(SRC, TGT, hostile)], tmp_path / "explorer.html", "t</title>")
    text = page.read_text(encoding="utf-8")
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    # nothing that a browser would load: no src=/href= attributes, no url(), no @import, no fetch
    assert not re.search(
        r"""\s(src|href)\s*=|url\(|@import|fetch\(|XMLHttpRequest|https?://(?!www\.w3\.org/2000/svg)""", text
    )
    assert text.count("</script>") == 3  # the data's, and the two scripts': the token's is escaped
    data = json.loads(re.search(r'id="explorer-data">(.*?)</script>', text, re.S)[1])
    assert data["examples"][0]["modules"]["encoder.0.self_attn"]["rows"][0].startswith("</script>")
    assert "<title>t&lt;/title&gt;</title>" in text


def test_the_size_budget_keeps_the_views_and_says_what_it_dropped():
    model = tiny_pytorch()
    examples = [example_for(model)] * 4
    full = explorer_data(model, examples)
    assert full["left_out"] == [] and len(full["examples"]) == 4
    small = explorer_data(model, examples, max_bytes=30_000)
    assert small["left_out"], "the budget dropped something and the page must say so"
    assert len(explorer_html(small)) < len(explorer_html(full))
    assert small["examples"][0]["modules"]["decoder.1.cross_attn"]["weights"] is not None  # the views stay
    assert any("step view" in note for note in small["left_out"])


def test_training_snapshots_come_with_their_tokens():
    from utils.observe.monitor import InternalsRecorder

    model = tiny_pytorch()
    recorder = InternalsRecorder(SRC, TGT, every=1)
    for step in (1, 2, 3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        recorder.record(model, step)
    data = explorer_data(model, [example_for(model)], recorder.to_dict())
    evolution = data["evolution"]
    assert evolution["steps"] == [1, 2, 3] and evolution["module"] == "decoder.1.cross_attn"
    maps = unpacked(evolution["maps"]["decoder.1.cross_attn"])
    assert maps.shape == (3, 4, 4, 5) and not (maps[0] == maps[2]).all()
    assert evolution["rows"]["decoder.1.cross_attn"] == tokens(TGT[0])
    assert evolution["cols"]["decoder.1.cross_attn"] == tokens(SRC[0])
