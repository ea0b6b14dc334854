"""Every observation tool on the decoder-only GPT (pytorch_version/gpt.py): its cache has no encoder,
no memory, no cross-attention, and every decoder row is one of the prompt's + completion's positions.

- the --debug trace: no Encoder section, the rotary turn of q and k as step 2b, and numbers that are
  the cache's (the printed attention matrix, the lengths of q and k before and after the turn);
- the analysis: masks over the one sequence (pads between prompt and completion left out), rotated q;
- the figures of write_analysis, called as pytorch_version/train.py calls it: the heatmaps hold the
  cache's weights of row 0 and are labelled by its prompt + completion tokens; the JSON says the family;
- InternalsRecorder follows the last self-attention.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from tests.factory import tiny_gpt, tiny_pytorch
from tests.observe import test_figures_data as figures_data
from tests.observe.test_figures_data import heatmap_of, labels, panels
from utils.data.tasks import first_example
from utils.data.tokenizer import PAD_ID, CharTokenizer
from utils.figures.visualization import TransformerVisualizer
from utils.observe.analysis import TransformerAnalyzer
from utils.observe.family import DECODER_ONLY, ENCODER_DECODER, family_of
from utils.observe.monitor import InternalsRecorder, write_analysis
from utils.observe.trace_printer import format_trace, trace_example

pytestmark = pytest.mark.usefixtures("single_thread")
drawn = figures_data.drawn  # {file stem: Figure}, savefig replaced by a recorder

TOK = CharTokenizer("abcdefghijklmnopqrstuvwxyz")
SRC, TGT = torch.tensor([[8, 9, 10, 11]]), torch.tensor([[1, 12, 13]])  # prompt e f g h, then <s> i j
SEQUENCE = TOK.tokens(SRC[0]) + TOK.tokens(TGT[0])
POSITIONS = ["rotary", "learned"]


def gpt(positions: str):
    """A tiny GPT whose heads attend unevenly (GPT-2's init alone gives near-uniform attention)."""
    model = tiny_gpt(positions=positions)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end, text.index(start))]


# ---- the --debug trace ----------------------------------------------------------------------------------
@pytest.mark.parametrize("positions", POSITIONS)
def test_trace_is_one_stack_over_prompt_and_completion(positions):
    model = gpt(positions)
    text = trace_example(model, SRC, TGT, TOK.tokens, layers="all", heads="0")
    assert "DECODER-ONLY" in text and "the prompt is part of the sequence" in text
    assert "ENCODER" not in text and "Encoder" not in text and "Cross-attention" not in text
    assert "prompt: e f g h   completion: <s> i j" in text
    for i in range(2):
        assert f"Decoder layer {i}" in text
    steps = ("1. Linear projections", "2. Reshape for heads", "4. Mask: look-ahead over prompt + completion",
             "5. Softmax", "6. Weighted sum", "7. Concatenate heads")  # fmt: skip
    for step in steps:
        assert text.count(step) == 2, step
    assert text.count("2b. Rotary positions: q and k turned") == (2 if positions == "rotary" else 0)
    assert ("+ position embedding" in text) == (positions == "learned")
    assert "FFN(x) = GELU(x W1 + b1) W2 + b2" in text and "ReLU" not in text
    assert text.count("> LayerNorm before the self-attention (pre-LN") == 2
    assert "Final LayerNorm" in text
    assert re.search(r"blocked per head\s+21 of 49", text)  # look-ahead over 7 positions: 7 * 6 / 2
    assert text.index("DECODER") < text.index("Decoder layer 0") < text.index("OUTPUT")


@pytest.mark.parametrize("positions", POSITIONS)
def test_trace_numbers_are_the_caches(positions):
    model = gpt(positions)
    text = trace_example(model, SRC, TGT, TOK.tokens, layers="all", heads="0")
    logits, cache = model.run_with_cache(SRC, TGT)
    for i in range(2):
        layer = section(text, f"Decoder layer {i}", "6. Weighted sum")
        lines = layer[layer.index("strongest key per query") :].splitlines()[1:9]
        assert lines[0].split() == SEQUENCE  # keys across: the prompt's then the completion's tokens
        rows = [line.split() for line in lines[1:]]
        assert [r[0] for r in rows] == SEQUENCE  # queries down
        printed = np.array([[float(x) for x in r[1:]] for r in rows])
        expected = cache[f"decoder.{i}.self_attn.weights"][0, 0].numpy()
        np.testing.assert_allclose(printed, expected, atol=0.005 + 1e-6)
        assert printed.std() > 0.1 and np.triu(printed, 1).max() == 0  # uneven, and nothing ahead
    predicted = re.search(r"most likely next token: (.*)", text)[1].split(", ")
    expected = TOK.tokens(cache["logits"][0].argmax(-1))  # one per position, the prompt's too
    assert predicted == [f"{t} -> {p}" for t, p in zip(SEQUENCE, expected)]
    torch.testing.assert_close(cache["logits"][:, 4:], logits)


def test_trace_shows_that_the_rotation_keeps_lengths():
    model = gpt("rotary")
    text = trace_example(model, SRC, TGT, TOK.tokens, layers="1", heads="2")
    _, cache = model.run_with_cache(SRC, TGT)
    k_proj = cache["decoder.1.self_attn.k_proj"]
    k_before = k_proj.view(1, 7, 4, 8).transpose(1, 2)
    for label, before, after in (("|q|", cache["decoder.1.self_attn.q"], cache["decoder.1.self_attn.q_rot"]),
                                 ("|k|", k_before, cache["decoder.1.self_attn.k_rot"])):  # fmt: skip
        line = re.search(rf"head 2 \{label[0]}{label[1]}\{label[2]} before -> after: (.*)", text)[1]
        shown = [re.fullmatch(r"(\S+) ([\d.]+) -> ([\d.]+)", part).groups() for part in line.split(", ")]
        assert [s[0] for s in shown] == SEQUENCE[:4]  # the first positions
        np.testing.assert_allclose([float(s[1]) for s in shown], before[0, 2, :4].norm(dim=-1), atol=6e-5)
        np.testing.assert_allclose([float(s[2]) for s in shown], after[0, 2, :4].norm(dim=-1), atol=6e-5)
        assert [s[1] for s in shown] == [s[2] for s in shown]  # turned, not stretched
        assert not torch.allclose(before[0, 2, 1:], after[0, 2, 1:])  # ... but turned (position 0 is not)
    assert re.search(r"rotation keeps lengths\s+largest change of \|q\| or \|k\|: \d\.\de-0[6-9]", text)


def test_trace_of_a_language_model_with_no_prompt():
    model = gpt("rotary")
    text = trace_example(model, torch.zeros(1, 0, dtype=torch.long), TGT, TOK.tokens)
    assert "prompt (0) then completion (3)" in text and "prompt: (none)" in text
    assert re.search(r"blocked per head\s+3 of 9", text)


def test_format_trace_reads_the_family_from_the_cache():
    _, cache = gpt("learned").run_with_cache(SRC, TGT)
    text = format_trace(cache, TOK.tokens(SRC[0]), TOK.tokens(TGT[0]), 2, activation="gelu")
    assert "DECODER-ONLY" in text and "ENCODER" not in text
    assert family_of(cache) is DECODER_ONLY and family_of(model=gpt("learned")) is DECODER_ONLY
    _, cache = tiny_pytorch().run_with_cache(SRC, TGT)
    assert family_of(cache) is ENCODER_DECODER and family_of(model=tiny_pytorch()) is ENCODER_DECODER


# ---- the analysis ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("positions", POSITIONS)
def test_analysis_leaves_the_pads_between_prompt_and_completion_out(positions):
    """Row [9 10 <pad> <pad> | <s> n] is analysed as [9 10 | <s> n]: the pads are neither queries nor
    keys (measures that count positions, span and the masses near i or i-1, differ by design)."""
    analyzer = TransformerAnalyzer(gpt(positions))
    padded = torch.tensor([[9, 10, 0, 0]]), torch.tensor([[1, 14]])
    alone = torch.tensor([[9, 10]]), torch.tensor([[1, 14]])
    reports = []
    for src, tgt in (padded, alone):
        _, cache = analyzer.run(src, tgt)
        qkv = analyzer.analyze_qkv_statistics(cache, src, tgt)
        patterns = analyzer.analyze_attention_patterns(cache, src, tgt)
        reports.append((qkv, patterns, analyzer.analyze_layer_contributions(cache, src, tgt)))
    (qkv_p, pat_p, layers_p), (qkv_a, pat_a, layers_a) = reports
    assert list(qkv_p) == ["decoder.0.self_attn", "decoder.1.self_attn"] == list(pat_p)
    for name in qkv_p:
        for hp, ha in zip(qkv_p[name], qkv_a[name]):
            assert hp == pytest.approx(ha, rel=1e-4, abs=1e-6)
        for hp, ha in zip(pat_p[name], pat_a[name]):
            for key in ("entropy", "normalized_entropy", "first_mass", "max_mass"):
                assert hp[key] == pytest.approx(ha[key], rel=1e-4, abs=1e-6), key
    assert [(e["layer"], e["sublayer"]) for e in layers_p["sublayers"]] == [
        (f"decoder.{i}", sub) for i in range(2) for sub in ("self_attn", "ffn")
    ]
    for ep, ea in zip(layers_p["sublayers"] + layers_p["ffn"], layers_a["sublayers"] + layers_a["ffn"]):
        numbers = {k: v for k, v in ea.items() if not isinstance(v, str)}
        assert {k: ep[k] for k in numbers} == pytest.approx(numbers, rel=1e-4, abs=1e-6)
        assert ep["layer"] == ea["layer"]


def test_qkv_statistics_read_the_turned_queries():
    analyzer = TransformerAnalyzer(gpt("rotary"))
    _, cache = analyzer.run(SRC, TGT)
    stats = analyzer.analyze_qkv_statistics(cache, SRC, TGT)["decoder.0.self_attn"][1]
    q_rot, q = cache["decoder.0.self_attn.q_rot"][0, 1], cache["decoder.0.self_attn.q"][0, 1]
    assert stats["q_mean"] == pytest.approx(q_rot.mean().item(), abs=1e-6)
    assert stats["q_mean"] != pytest.approx(q.mean().item(), abs=1e-6)
    scores = cache["decoder.0.self_attn.scores"][0, 1]  # q_rot . k / sqrt(d_k) on the allowed pairs
    allowed = torch.ones(7, 7, dtype=torch.bool).tril()
    assert stats["score_std_scaled"] == pytest.approx(scores[allowed].std(correction=0).item(), rel=1e-4)


def test_gradient_flow_groups_the_gpts_parameters():
    model = gpt("learned")
    analyzer = TransformerAnalyzer(model)
    flow = analyzer.analyze_gradient_flow(SRC, TGT, labels=torch.tensor([[12, 13, 2]]))
    layers = [f"decoder.{i}.{s}" for i in range(2) for s in ("self_attn", "ffn", "norm")]
    expected = ["embeddings", "positions", *layers]
    assert list(flow["groups"]) == [*expected, "final_norm"]  # lm_head is the tied embedding
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(SRC, TGT)[0], torch.tensor([12, 13, 2]))
    loss.backward()
    assert flow["loss"] == pytest.approx(loss.item(), rel=1e-5)
    position_grad = model.positions.embedding.weight.grad.norm().item()
    assert flow["groups"]["positions"] == pytest.approx(position_grad, rel=1e-4)


# ---- figures and the recorder ----------------------------------------------------------------------------
@pytest.mark.parametrize("head", [None, 1])
def test_heatmap_is_that_heads_weights_labelled_by_the_sequence(drawn, tmp_path, head):
    _, cache = gpt("rotary").run_with_cache(SRC, TGT)
    vis = TransformerVisualizer(tmp_path)
    vis.plot_attention_for_example(cache, TOK.tokens(SRC[0]), TOK.tokens(TGT[0]), 1, "decoder_self", head)
    (ax,) = panels(drawn["decoder_self_layer1" + ("" if head is None else f"_head{head}")])
    w = cache["decoder.1.self_attn.weights"][0]
    np.testing.assert_allclose(heatmap_of(ax), (w.mean(0) if head is None else w[head]).numpy(), rtol=1e-6)
    assert labels(ax, "y") == SEQUENCE and labels(ax, "x") == SEQUENCE
    vis.plot_multihead_comparison(cache, -1, "decoder_self", TOK.tokens(SRC[0]), TOK.tokens(TGT[0]))
    for h, ax in enumerate(panels(drawn["multihead_comparison"])):
        np.testing.assert_allclose(heatmap_of(ax), w[h].numpy(), rtol=1e-6)
        assert labels(ax, "x") == SEQUENCE


def test_recorder_snapshots_the_last_self_attention():
    model = gpt("rotary")
    recorder = InternalsRecorder(SRC, TGT, every=2)
    for step in (1, 2, 3):
        recorder.maybe_record(model, step)
    assert [s for s, _ in recorder.attention_snapshots] == [1, 2]
    _, cache = model.run_with_cache(SRC, TGT)
    torch.testing.assert_close(recorder.attention_snapshots[0][1], cache["decoder.1.self_attn.weights"][0, 0])
    assert set(recorder.qkv_history[0][1]) == {"decoder.0.self_attn", "decoder.1.self_attn"}
    record = json.loads(json.dumps(recorder.to_dict()))
    assert record["family"] == "decoder-only"
    assert set(record["attention_maps"][0]["weights"]) == {f"decoder.{i}.self_attn.weights" for i in range(2)}


@pytest.mark.slow
@pytest.mark.parametrize("positions", POSITIONS)
def test_write_analysis_as_the_training_loop_calls_it(drawn, tmp_path, positions):
    """pytorch_version/train.py: InternalsRecorder(*first_example(probe)), maybe_record each step, a last
    record, then write_analysis(model, src, tgt_in, tgt_out of the probe, row 0's tokens, ...). Row 0's
    prompt is the shorter one here, so pads sit inside its sequence in the batch."""
    model = gpt(positions)
    probe = {"src": torch.tensor([[9, 10, 0, 0], [5, 6, 7, 8]]),
             "tgt_in": torch.tensor([[1, 14, 15], [1, 11, 12]]),
             "tgt_out": torch.tensor([[14, 15, 2], [11, 12, 2]])}  # fmt: skip
    recorder = InternalsRecorder(*first_example(probe, PAD_ID), 1)
    for step in (1, 2):
        recorder.maybe_record(model, step)
    recorder.record(model, 3)
    src, tgt = first_example(probe, PAD_ID)
    paths = write_analysis(model, *(probe[k] for k in ("src", "tgt_in", "tgt_out")), TOK.tokens(src[0]),
                           TOK.tokens(tgt[0]), TOK.id_to_token, tmp_path, recorder)  # fmt: skip
    sequence = TOK.tokens(src[0]) + TOK.tokens(tgt[0])  # 9 10 | <s> 14 15: five positions
    assert len(sequence) == 5
    report = json.loads((tmp_path / "analysis_report.json").read_text())
    assert report["family"] == "decoder-only" and report["tokens"]["sequence"] == sequence
    assert json.loads((tmp_path / "internals.json").read_text())["family"] == "decoder-only"
    _, cache = model.run_with_cache(probe["src"], probe["tgt_in"])
    real = torch.tensor([0, 1, 4, 5, 6])  # row 0's positions in the batch: no pads
    for stem, layer, head in (("decoder_self_layer0", 0, None), ("decoder_self_layer1", 1, None),
                              ("attention_step_3", 1, 0), ("attention_evolution", 1, 0)):  # fmt: skip
        ax = panels(drawn[stem])[-1]  # the evolution's last panel is the last step
        w = cache[f"decoder.{layer}.self_attn.weights"][0][:, real][:, :, real]
        expected = w.mean(0) if head is None else w[head]
        np.testing.assert_allclose(heatmap_of(ax), expected.numpy(), atol=1e-5, err_msg=stem)
        assert labels(ax, "y") == sequence and labels(ax, "x") == sequence, stem
    for stem in ("multihead_comparison", "qkv_evolution", "layer_contributions", "gradient_flow", "masks"):
        assert stem in drawn
    assert {p.name for p in paths} >= {"report.md", "decoder_self_layer1.png", "gradient_flow.png"}


@pytest.mark.slow
def test_write_analysis_writes_real_pngs_for_a_gpt(tmp_path):
    model = gpt("rotary")
    probe = {"src": SRC, "tgt_in": TGT, "tgt_out": torch.tensor([[12, 13, 2]])}
    paths = write_analysis(model, SRC, TGT, probe["tgt_out"], TOK.tokens(SRC[0]), TOK.tokens(TGT[0]),
                           TOK.id_to_token, tmp_path)  # fmt: skip
    pngs = [p for p in paths if p.suffix == ".png"]
    assert len(pngs) >= 12
    for path in pngs:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "decoder_self_layer0.png" in (tmp_path / "report.md").read_text()
