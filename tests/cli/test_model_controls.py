"""The model-shaping and decoding flags change what a run does (the rest of the run-control flags,
tests/cli/test_run_controls.py has the others): residual and embedding dropout at each of its sites,
--length_penalty reaching both decoders, a --config file with flags winning, and the HF version's
--gradient_accumulation_steps end to end. Every test goes red when its flag is ignored."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

import main
from pytorch_version import decoding
from pytorch_version.model import Transformer
from pytorch_version.train import train
from tests.conftest import COPY_RUN, tiny_config
from tests.run_control_helpers import (
    RUNS,
    TINY,
    epochs_logged,
    hf_weights,
    max_difference,
    records,
    run_hf,
    same_weights,
)
from utils.fast import LabelledLogits
from utils.observe.tracing import run_with_cache
from utils.runtime.config import RunConfig

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.slow,
]  # slow: a short run of both versions per flag


# ---- residual and embedding dropout -------------------------------------------------------------------
def _src_tgt():
    g = torch.Generator().manual_seed(3)
    src, tgt = torch.randint(4, 30, (4, 7), generator=g), torch.randint(4, 30, (4, 6), generator=g)
    src[0, 5:] = 0
    tgt[:, 0] = 1
    return src, tgt


def _pt_forwards(model, src, tgt):
    labelled = torch.ones_like(tgt, dtype=torch.bool)  # the training step's packed path (utils/fast)
    return model(src, tgt), LabelledLogits(model, 0)(src, tgt, labelled), model.encode(src)


def _hf_forwards(model, src, tgt):
    mask = (src != 0).long()
    labelled = torch.ones_like(tgt, dtype=torch.bool)
    full = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt, use_cache=False).logits
    packed = LabelledLogits(model, 0)(src, tgt, labelled, mask)
    return full, packed


def _build(version: str, dropout: float):
    torch.manual_seed(0)
    # residual and embedding dropout only
    config = tiny_config(dropout=dropout, attention_dropout=0.0, num_layers=1)
    if version == "pytorch":
        return Transformer(config), _pt_forwards
    from huggingface_version.convert import hf_config_of
    from huggingface_version.modeling import TutorialTransformerForConditionalGeneration

    return TutorialTransformerForConditionalGeneration(hf_config_of(config)), _hf_forwards


@pytest.mark.parametrize("version", ["pytorch", "huggingface"])
def test_dropout_makes_training_forwards_differ_and_leaves_eval_forwards_equal(version):
    src, tgt = _src_tgt()
    model, forwards = _build(version, dropout=0.3)
    model.train()
    for a, b in zip(forwards(model, src, tgt), forwards(model, src, tgt)):
        assert not torch.equal(a, b), "two training-mode forwards with dropout 0.3 agree"
    model.eval()
    for a, b in zip(forwards(model, src, tgt), forwards(model, src, tgt)):
        assert torch.equal(a, b)
    without, _ = _build(version, dropout=0.0)
    without.train()  # no dropout: training mode is deterministic, so the difference above is dropout's
    for a, b in zip(forwards(without, src, tgt), forwards(without, src, tgt)):
        assert torch.equal(a, b)


# Where P_drop applies (section 5.4), in cache names of the contract both versions record
# (../shared/DESIGN.md, run_with_cache): (what enters, what the sublayer added, the stream before it)
# for the post-LN layers: norm.in = stream + dropout(sublayer.out); the embeddings: resid_pre = dropout(pos)
DROPOUT_SITES = [
    ("encoder.0.resid_pre", None, "src_pos"),
    ("decoder.0.resid_pre", None, "tgt_pos"),
    ("encoder.0.norm1.in", "encoder.0.self_attn.out", "encoder.0.resid_pre"),
    ("encoder.0.norm2.in", "encoder.0.ffn.out", "encoder.0.resid_mid"),
    ("decoder.0.norm1.in", "decoder.0.self_attn.out", "decoder.0.resid_pre"),
    ("decoder.0.norm2.in", "decoder.0.cross_attn.out", "decoder.0.resid_mid"),
    ("decoder.0.norm3.in", "decoder.0.ffn.out", "decoder.0.resid_cross"),
]


def _dropped_share(cache: dict, site: tuple, p: float) -> float:
    """The share of the site's elements dropout zeroed; every element must be 0 or kept / (1 - p)."""
    entering, added, before = (cache[n].float() if n else None for n in site)
    value = entering - before if added is not None else entering  # what dropout let through
    source = added if added is not None else before  # what it was applied to
    zero = value.abs() < 1e-5
    kept = (value - source / (1 - p)).abs() < 1e-4 * (1 + source.abs())
    assert bool((zero | kept).all()), f"{site[0]}: values that are neither dropped nor scaled by 1/(1-p)"
    return float((zero & (source.abs() > 1e-3)).sum() / (source.abs() > 1e-3).sum())


@pytest.mark.parametrize("version", ["pytorch", "huggingface"])
def test_every_residual_and_embedding_dropout_site_drops_in_training_only(version):
    """Each of the paper's dropout sites, on its own: about 30% of its elements zeroed in training
    mode (the rest scaled by 1 / 0.7), none in evaluation mode."""
    src, tgt = _src_tgt()
    model, _ = _build(version, dropout=0.3)
    for site in DROPOUT_SITES:
        model.train()
        _, cache = run_with_cache(model, src, tgt)
        assert 0.15 < _dropped_share(cache, site, 0.3) < 0.45, site[0]
        model.eval()
        _, cache = run_with_cache(model, src, tgt)
        assert _dropped_share(cache, site, 0.0) == 0.0, site[0]


@pytest.mark.parametrize("version", ["pytorch", "huggingface"])
def test_dropout_is_applied_in_the_training_step(version, tmp_path):
    """Two optimizer steps from the same start (dropout draws no random numbers at initialisation; the
    first step, at rate 0, moves nothing): dropout 0.3 must give other weights than dropout 0, else
    the steps ran without it."""
    run, weights = RUNS[version]
    plain = weights(run(tmp_path / "p0", train_size=64, dropout=0.0))
    dropped = weights(run(tmp_path / "p3", train_size=64, dropout=0.3))
    assert not same_weights(plain, dropped)


# ---- --length_penalty ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, single_thread):
    """A pytorch_version .pt checkpoint after one epoch of the shared copy run (half trained: it ends
    its beams at various lengths, so the length penalty matters; 1.3 s), and a results_huggingface
    folder of the tiny run (0.7 s)."""
    out = tmp_path_factory.mktemp("checkpoints")
    settings = {**COPY_RUN, "epochs": 1, "eval_size": 50, "checkpoint_average": 0}
    train(RunConfig(output_dir=str(out), **settings))
    pt = out / "results_pytorch" / "checkpoints" / "best_model.pt"
    return {"pytorch": str(pt), "huggingface": str(run_hf(out))}


def _alpha_of(real, args, kwargs) -> float:
    bound = inspect.signature(real).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments["alpha"]


def test_length_penalty_reaches_pytorch_beam_search_from_the_cli(checkpoints, monkeypatch, capsys):
    received = []
    real = decoding.beam_search

    def spy(*args, **kwargs):
        received.append(_alpha_of(real, args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(decoding, "beam_search", spy)
    for alpha in ("0.37", "1.5"):
        argv = ["--checkpoint", checkpoints["pytorch"], "--source", "abc", "--beam_size", "3",
                "--length_penalty", alpha, "--device", "cpu"]  # fmt: skip
        assert main.main(argv) == 0
    assert received == [0.37, 1.5]
    assert "output:" in capsys.readouterr().out


def test_length_penalty_reaches_hf_generate_from_the_cli(checkpoints, monkeypatch, capsys):
    from huggingface_version.modeling import TutorialTransformerForConditionalGeneration as Model

    received = []
    real = Model.generate

    def spy(self, *args, **kwargs):
        received.append((kwargs.get("num_beams"), kwargs.get("length_penalty")))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Model, "generate", spy)
    for alpha in ("0.37", "1.5"):
        argv = ["--checkpoint", checkpoints["huggingface"], "--source", "abc", "--beam_size", "3",
                "--length_penalty", alpha, "--device", "cpu"]  # fmt: skip
        assert main.main(argv) == 0
    assert received == [(3, 0.37), (3, 1.5)]
    assert "output:" in capsys.readouterr().out


@pytest.mark.parametrize("version", ["pytorch", "huggingface"])
def test_length_penalty_reaches_the_decoder_in_evaluate(version, checkpoints, monkeypatch, tmp_path, capsys):
    """--evaluate translates a test set with --beam_size and --length_penalty too."""
    from huggingface_version.modeling import TutorialTransformerForConditionalGeneration as Model

    received = []
    real_beam_search, real_generate = decoding.beam_search, Model.generate

    def beam_search_spy(*args, **kwargs):
        received.append(_alpha_of(real_beam_search, args, kwargs))
        return real_beam_search(*args, **kwargs)

    def generate_spy(self, *args, **kwargs):
        received.append(kwargs.get("length_penalty"))
        return real_generate(self, *args, **kwargs)

    monkeypatch.setattr(decoding, "beam_search", beam_search_spy)
    monkeypatch.setattr(Model, "generate", generate_spy)
    prefix = tmp_path / "test"
    for lang in ("de", "en"):
        (tmp_path / f"test.{lang}").write_text("abc\nxy\n")
    argv = ["--evaluate", "--checkpoint", checkpoints[version], "--test_prefix", str(prefix),
            "--beam_size", "3", "--length_penalty", "0.37", "--device", "cpu"]  # fmt: skip
    assert main.main(argv) == 0, capsys.readouterr().err
    assert received and set(received) == {0.37}


def _half_trained(checkpoints):
    """The half-trained copy model and 24 random inputs of 2-6 letters, padded."""
    from pytorch_version.inference import load_for_inference
    from utils.data.tasks import pad_batch

    model, tokenizer, _ = load_for_inference(checkpoints["pytorch"])
    g = torch.Generator().manual_seed(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    texts = ["".join(letters[i] for i in torch.randint(0, 26, (int(n),), generator=g))
             for n in torch.randint(2, 7, (24,), generator=g)]  # fmt: skip
    return model, pad_batch([tokenizer.encode(t) for t in texts], tokenizer.pad_id)


def test_two_length_penalties_rank_pytorch_beams_differently(checkpoints):
    """The same beams are ranked at the end by score / ((5 + |Y|) / 6)^alpha: a larger alpha picks
    a best hypothesis at least as long for every input, and for some a longer one (13 of 24 here)."""
    model, src = _half_trained(checkpoints)
    short, long = (decoding.beam_search(model, src, 4, 10, alpha=a) for a in (0.0, 2.0))
    short_len, long_len = ((r.best != 0).sum(-1) for r in (short, long))
    assert torch.all(long_len >= short_len)
    assert int((long_len > short_len).sum()) >= 3, "alpha 0 and 2 picked the same best beams"
    assert not torch.allclose(short.scores, long.scores)


def test_two_length_penalties_rank_hf_beams_differently(checkpoints):
    """HF's beam search with the same weights (converted): another length_penalty, other best beams."""
    from huggingface_version.convert import pytorch_to_hf

    model, src = _half_trained(checkpoints)
    hf = pytorch_to_hf(model).eval()
    beams = dict(attention_mask=(src != 0).long(), max_new_tokens=10, num_beams=4, early_stopping=True)
    outputs = [hf.generate(input_ids=src, length_penalty=alpha, **beams) for alpha in (0.0, 2.0)]
    # each output up to its EOS: what comes after is filler (PAD or EOS, as transformers pads beams)
    rows = [[row[: row.index(2)] if 2 in row else row for row in o.tolist()] for o in outputs]
    assert sum(a != b for a, b in zip(*rows)) >= 3, "length_penalty 0 and 2 picked the same beams"
    assert sum(map(len, rows[1])) > sum(map(len, rows[0]))  # the larger penalty: longer outputs


# ---- --config FILE.yaml --------------------------------------------------------------------------------
def test_a_config_file_sets_the_run_and_flags_win_over_it(tmp_path):
    from main import parse_config

    path = tmp_path / "run.yaml"
    path.write_text("task: copy\nepochs: 3\nhidden_size: 48\nnum_heads: 4\nquiet: true\ndropout: 0.2\n"
                    "clip_grad_norm: 0.5\n")  # fmt: skip
    from_file = parse_config(["--config", str(path)])
    assert (from_file.task, from_file.epochs, from_file.hidden_size) == ("copy", 3, 48)
    assert (from_file.quiet, from_file.dropout, from_file.clip_grad_norm) == (True, 0.2, 0.5)
    assert from_file.batch_size == RunConfig.batch_size  # a key not in the file keeps its default
    both = parse_config(["--epochs", "5", "--config", str(path), "--no-quiet", "--dropout", "0.0"])
    assert (both.epochs, both.quiet, both.dropout) == (5, False, 0.0)  # the flags, wherever they stand
    assert (both.hidden_size, both.clip_grad_norm) == (48, 0.5)  # the file, where no flag is given

    addition = tmp_path / "addition.yaml"
    addition.write_text("task: addition\n")  # a task's own default applies to a file's task too
    assert parse_config(["--config", str(addition)]).dropout == 0.0
    addition.write_text("task: addition\ndropout: 0.3\n")
    assert parse_config(["--config", str(addition)]).dropout == 0.3


def test_a_config_file_drives_a_run_from_main(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    settings = {**TINY, "epochs": 3, "output_dir": str(tmp_path / "runs")}
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items()))
    assert main.main(["--config", str(path), "--epochs", "2"]) == 0
    folder = tmp_path / "runs" / "results_pytorch"
    assert epochs_logged(folder) == [1, 2]  # the flag's 2, not the file's 3
    saved = json.loads((folder / "config.json").read_text())["run"]
    assert (saved["hidden_size"], saved["train_size"], saved["epochs"]) == (16, 64, 2)


# ---- --gradient_accumulation_steps (Hugging Face, end to end) ----------------------------------------------
def test_hf_accumulating_two_batches_makes_the_steps_of_one_double_batch(tmp_path, monkeypatch):
    """Batches of 8 with accumulation 2 against batches of 16: the same optimizer steps (the loss is
    divided by the tokens of the whole window, and lengths vary), so the same weights up to float
    rounding; with the flag ignored there would be twice the steps and other weights.

    Plain SGD instead of Adam, as in tests/core/test_core_training.py: Adam's first steps are about
    lr * sign(gradient), which turns rounding noise in near-zero gradients into lr-sized differences."""
    from transformers.training_args import OptimizerNames

    import huggingface_version.train as hf_train

    original = hf_train.training_arguments

    def with_sgd(*args, **kwargs):
        arguments = original(*args, **kwargs)
        arguments.optim = OptimizerNames.SGD  # torch.optim.SGD at the Noam rate
        return arguments

    monkeypatch.setattr(hf_train, "training_arguments", with_sgd)
    kwargs = dict(train_size=64, min_len=2, max_len=9, epochs=2, lr_factor=20.0)  # Noam x 20 for SGD
    accumulated = run_hf(tmp_path / "a", batch_size=8, gradient_accumulation_steps=2, **kwargs)
    double = run_hf(tmp_path / "d", batch_size=16, gradient_accumulation_steps=1, **kwargs)
    assert [r["step"] for r in records(accumulated)] == [r["step"] for r in records(double)] == [4, 8]
    single = run_hf(tmp_path / "s", batch_size=8, gradient_accumulation_steps=1, **kwargs)
    a, d, s = hf_weights(accumulated), hf_weights(double), hf_weights(single)
    assert max_difference(a, d) < 1e-6
    assert max_difference(s, d) > 1e-2  # what ignoring the flag would give is far off
