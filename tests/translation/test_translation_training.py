"""Translation end to end on a slice of Multi30k: both versions train, score BLEU and translate;
--evaluate writes its files; --source/--debug show subword tokens; beams come sorted by score."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pytorch_version.decoding import beam_search
from pytorch_version.inference import load_for_inference
from utils.data.bpe import BPETokenizer
from utils.data.tasks import pad_batch
from utils.runtime.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]
MULTI30K = ROOT.parent / "shared/data/multi30k"
pytestmark = [
    pytest.mark.skipif(
        not (MULTI30K / "train.de").is_file(), reason=f"the shared Multi30k copy is not at {MULTI30K}"
    ),
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.slow,  # translation runs on Multi30k
]
# a model this small learns little in a few steps; the point is that every stage runs and scores
TINY = dict(task="translation", src_lang="de", tgt_lang="en", seed=0, device="cpu", vocab_size=400,
            hidden_size=32, num_layers=1, num_heads=2, ffn_size=64, dropout=0.0, epochs=2,
            max_tokens=1200, warmup_steps=10, lr_factor=2.0, quiet=True)  # fmt: skip


def head(path: Path, n: int) -> str:
    return "".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:n])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The first 400 training and 40 validation pairs of the shared Multi30k copy, plus a 'test' set."""
    folder = tmp_path_factory.mktemp("multi30k_slice")
    for lang in ("de", "en"):
        (folder / f"train.{lang}").write_text(head(MULTI30K / f"train.{lang}", 400), encoding="utf-8")
        (folder / f"val.{lang}").write_text(head(MULTI30K / f"val.{lang}", 40), encoding="utf-8")
        (folder / f"test.{lang}").write_text(head(MULTI30K / f"val.{lang}", 12), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def pytorch_run(corpus, tmp_path_factory):
    from pytorch_version.train import train

    cfg = RunConfig(version="pytorch", data_dir=str(corpus), output_dir=str(tmp_path_factory.mktemp("pt")),
                    checkpoint_average=2, beam_size=2, **TINY)  # fmt: skip
    return cfg, train(cfg), Path(cfg.output_dir) / "results_pytorch"


def test_pytorch_translation_run_scores_bleu_and_writes_its_files(pytorch_run):
    _, summary, out = pytorch_run
    records = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        assert {"eval_bleu", "eval_lowercase_bleu", "eval_chrf"} <= set(record)
        assert 0.0 <= record["eval_bleu"] <= 100.0
    assert summary["best_eval_bleu"] == max(r["eval_bleu"] for r in records)
    assert summary["data"]["padding_ratio"] < summary["data"]["random_batch_padding_ratio"]
    final = summary["final_translation"]
    assert final["beam_size"] == 2 and set(final) >= {"best_model", "averaged_model", "signatures"}
    assert final["signatures"]["bleu"].startswith("nrefs:1|case:mixed")
    for name in ("best_model", "averaged_model"):
        assert (out / "checkpoints" / f"{name}.pt").is_file()
        assert len((out / f"val.{name}.hyp.txt").read_text(encoding="utf-8").splitlines()) == 40
    assert (out / "visualizations" / "dataset_statistics.png").is_file()
    assert (out / "training_curves.png").is_file()


def test_greedy_translations_are_non_empty_text(pytorch_run):
    _, _, out = pytorch_run
    model, tokenizer, data = load_for_inference(out / "checkpoints" / "best_model.pt")
    assert isinstance(tokenizer, BPETokenizer) and data["model_config"]["share_embeddings"]
    from pytorch_version.inference import translate

    outputs = translate(model, tokenizer, ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee."])
    assert all(isinstance(o, str) and o.strip() for o in outputs), outputs


def test_beam_search_returns_sequences_sorted_by_score(pytorch_run):
    _, _, out = pytorch_run
    model, tokenizer, _ = load_for_inference(out / "checkpoints" / "best_model.pt")
    texts = ["Ein Mann fährt Fahrrad.", "Eine Frau liest ein Buch im Park.", "Kinder spielen."]
    src = pad_batch([tokenizer.encode(t) for t in texts], tokenizer.pad_id)
    result = beam_search(model, src, beam_size=4, max_new_tokens=20, alpha=0.6)
    assert result.sequences.shape[:2] == (3, 4)
    assert torch.all(result.scores[:, :-1] >= result.scores[:, 1:]), result.scores


def test_evaluate_cli_writes_hypotheses_and_metrics_next_to_the_checkpoint(pytorch_run, corpus):
    _, _, out = pytorch_run
    checkpoint = out / "checkpoints" / "averaged_model.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--evaluate", "--checkpoint", str(checkpoint),
         "--test_prefix", str(corpus / "test"), "--beam_size", "2", "--device", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "BLEU lowercased" in result.stdout and "nrefs:1|case:mixed" in result.stdout
    hypotheses = (out / "checkpoints" / "test.hyp.txt").read_text(encoding="utf-8").splitlines()
    metrics = json.loads((out / "checkpoints" / "test.test_metrics.json").read_text())
    assert len(hypotheses) == 12 == metrics["sentences"]
    assert {"bleu", "lowercase_bleu", "chrf", "signatures"} <= set(metrics)
    assert metrics["decoding"]["beam_size"] == 2


def test_source_with_debug_traces_subword_tokens(pytorch_run, capsys):
    import main

    _, _, out = pytorch_run
    checkpoint = str(out / "checkpoints" / "best_model.pt")
    assert main.main(["--checkpoint", checkpoint, "--source", "Ein Mann fährt Fahrrad.", "--debug"]) == 0
    printed = capsys.readouterr().out
    assert "▁Mann" in printed and "source: Ein Mann fährt Fahrrad." in printed


def test_huggingface_translation_run_and_evaluate(corpus, tmp_path):
    import main
    from huggingface_version.train import train_huggingface

    cfg = RunConfig(
        version="huggingface", data_dir=str(corpus), output_dir=str(tmp_path), **TINY | {"epochs": 1}
    )
    summary = train_huggingface(cfg)
    out = tmp_path / "results_huggingface"
    record = json.loads((out / "logs" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"eval_bleu", "eval_lowercase_bleu", "eval_chrf"} <= set(record)
    assert summary["best_eval_bleu"] == record["eval_bleu"] >= 0.0
    assert main.main(["--evaluate", "--checkpoint", str(out), "--test_prefix", str(corpus / "test")]) == 0
    assert len((out / "test.hyp.txt").read_text(encoding="utf-8").splitlines()) == 12
    assert json.loads((out / "test.test_metrics.json").read_text())["sentences"] == 12
    for lang in ("de", "en"):  # a second test set: its own scores, the first's kept
        (tmp_path / f"other.{lang}").write_text(
            (corpus / f"test.{lang}").read_text(encoding="utf-8")[:-1] + "\n"
        )
    assert main.main(["--evaluate", "--checkpoint", str(out), "--test_prefix", str(tmp_path / "other")]) == 0
    first, second = (json.loads((out / f"{n}.test_metrics.json").read_text()) for n in ("test", "other"))
    assert first["source"].endswith("test.de") and second["source"].endswith("other.de")
