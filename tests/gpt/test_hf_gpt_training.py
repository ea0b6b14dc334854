"""The HF GPT trained by the Trainer (huggingface_version/train.py, causal_trainer.py, run_data.py), compared
with pytorch_version (--version both), and its folders used from the CLI.

    toy task     prompt <s> completion </s>, labels -100 on the prompt: a short copy run learns
    --task lm    rounds of random windows (the very ones pytorch_version reads); the validation loss
                 over the whole split equals pytorch_version.evaluate.evaluate_lm's on the same weights
    both         same initial weights, the converted logits agree, the metrics.jsonl keys are the same
    CLI          --prompt, --source (greedy and beam) and --debug with a saved folder
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.robust_helpers import main_in_process, metrics_without_time
from utils.runtime.config import RunConfig

pytestmark = pytest.mark.usefixtures("single_thread")

TEXT = "".join(f"{name}:\nO soft, what light through yonder window breaks? It is the east.\n\n"
               for name in ("ROMEO", "JULIET", "NURSE", "MERCUTIO", "TYBALT", "BENVOLIO") * 8)  # fmt: skip
TINY_GPT = dict(arch="gpt", seed=0, device="cpu", hidden_size=32, num_layers=2, num_heads=4, ffn_size=64,
                dropout=0.0, quiet=True)  # fmt: skip
# a copy task the GPT learns in about 7 s on one core: final exact match 0.83-0.98 for seeds 0-4
GPT_COPY = dict(TINY_GPT, task="copy", train_size=2000, eval_size=100, min_len=2, max_len=4, epochs=8,
                batch_size=32, warmup_steps=100, lr_factor=1.0, init="xavier",
                checkpoint_average=0)  # fmt: skip
LM = dict(TINY_GPT, task="lm", context_length=16, max_steps=30, eval_every=10, batch_size=8, warmup_steps=5,
          max_new_tokens=20)  # fmt: skip


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "play.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "logs" / "metrics.jsonl").read_text().splitlines()]


# --- pieces --------------------------------------------------------------------------------------


def test_a_gpt_example_is_prompt_bos_completion_eos_with_the_loss_on_the_completion():
    from huggingface_version.run_data import encode_prompts
    from huggingface_version.tokenization import gpt_tokenizer_fast
    from utils.data.tasks import tokenizer_for_task

    chars = tokenizer_for_task("reversal")
    tokenizer = gpt_tokenizer_fast(chars, prompt_separator=True)
    (example,) = encode_prompts(tokenizer, [("abc", "cba")])
    assert example["input_ids"] == [*chars.encode("abc", add_eos=False), chars.bos_id, *chars.encode("cba")]
    assert example["labels"] == [-100] * 4 + chars.encode("cba")  # the prompt and its BOS carry no loss


def test_a_boolean_logits_to_keep_gives_those_rows_only():
    from tests.factory import tiny_gpt_twins

    _, hf = tiny_gpt_twins()
    ids = torch.randint(4, 30, (3, 7), generator=torch.Generator().manual_seed(0))
    keep = torch.rand(3, 7, generator=torch.Generator().manual_seed(1)) > 0.5
    full = hf(input_ids=ids, use_cache=False).logits
    rows = hf(input_ids=ids, use_cache=False, logits_to_keep=keep).logits
    assert rows.shape == (int(keep.sum()), 30)
    torch.testing.assert_close(rows, full[keep])


def test_the_lm_rounds_are_pytorch_versions_windows():
    from huggingface_version.run_data import LMRounds
    from utils.data.lm import LMBatches

    ids = torch.arange(4, 200) % 50 + 4
    theirs = LMBatches(ids, 4, 8, steps=3, seed=5)
    rounds = LMRounds(LMBatches(ids, 4, 8, steps=3, seed=5), rounds_done=lambda: 1)  # resumed after round 1
    for r in (2, 3):
        theirs.set_epoch(r)
        for mine, batch in zip(rounds, theirs, strict=True):
            assert torch.equal(mine["input_ids"], batch["tgt_in"])
            assert torch.equal(mine["labels"][:, 1:], batch["tgt_out"])  # position t scored on labels[t + 1]


def test_the_hf_validation_loss_is_evaluate_lms_on_the_same_weights(text_file):
    from huggingface_version.causal_trainer import evaluate_lm_hf
    from pytorch_version.evaluate import evaluate_lm
    from tests.factory import tiny_gpt_twins
    from utils.data.lm import load_text_corpus

    cfg = RunConfig.from_dict({**LM, "data_file": str(text_file)})
    corpus = load_text_corpus(str(text_file), context_length=cfg.context_length)
    vocab = {"src_vocab_size": corpus.vocab_size, "tgt_vocab_size": corpus.vocab_size}
    pt, hf = tiny_gpt_twins(max_position=cfg.context_length, **vocab)
    ours, theirs = evaluate_lm_hf(hf, corpus, cfg), evaluate_lm(pt, corpus, cfg, "cpu")
    assert (len(corpus.val_ids) - 1) % cfg.context_length  # the last window is padded: PAD is no target
    for key in ("eval_loss", "eval_bits_per_char", "eval_perplexity"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-6), key
    assert ours["eval_loss"] > 3.0  # untrained: about ln(vocabulary)
    assert ours["eval_examples"][0].startswith(corpus.tokenizer.decode(corpus.val_ids[:8].tolist()))


# --- runs ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory, single_thread):
    from huggingface_version.train import train_huggingface

    cfg = RunConfig.from_dict({**GPT_COPY, "version": "huggingface",
                               "output_dir": str(tmp_path_factory.mktemp("hf_gpt_copy"))})  # fmt: skip
    return cfg, train_huggingface(cfg), Path(cfg.output_dir) / "results_huggingface"


def test_a_short_copy_run_learns_and_saves_a_folder_pipeline_reads(copy_run):
    from transformers import pipeline

    cfg, summary, out = copy_run
    assert summary["final"]["eval_exact_match"] >= 0.7, summary["final"]  # 0.83 here (seeds 0-4: 0.83-0.98)
    records = _records(out)
    assert [r["epoch"] for r in records] == list(range(1, cfg.epochs + 1))
    keys = {"epoch", "step", "train_loss", "eval_loss", "eval_token_accuracy", "eval_exact_match", "lr"}
    keys.add("elapsed_s")
    assert set(records[0]) == keys  # pytorch_version's (test_both_on_a_toy_task_... compares the two)
    for name in ("model.safetensors", "config.json", "modeling_gpt.py", "configuration_gpt.py",
                 "tokenizer.json", "summary.json", "training_curves.png"):  # fmt: skip
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["task"] == "copy"
    generator = pipeline("text-generation", model=str(out))
    (result,) = generator("abcd", max_new_tokens=8, do_sample=False)
    assert result["generated_text"].startswith("abcd")  # the prompt, then (it copies) its copy


def test_source_decodes_a_toy_folder_greedy_and_beam_and_debug_traces(copy_run, capsys):
    _, _, out = copy_run
    for flags in ([], ["--beam_size", "3"]):
        code, printed, err = main_in_process(["--checkpoint", str(out), "--source", "hello", *flags], capsys)
        assert code == 0, err
        assert printed.splitlines()[0] == "source: hello" and printed.splitlines()[1].startswith("output: ")
    code, printed, err = main_in_process(["--checkpoint", str(out), "--source", "abc", "--debug"], capsys)
    assert code == 0, err
    assert "DECODER-ONLY MODEL" in printed and "prompt: a b c" in printed


@pytest.fixture(scope="module")
def lm_both(tmp_path_factory, text_file, single_thread):
    """--version both on a text, the halves one after the other: a few seconds."""
    from huggingface_version.compare import run_comparison

    cfg = RunConfig.from_dict({**LM, "version": "both", "data_file": str(text_file), "parallel_halves": False,
                               "output_dir": str(tmp_path_factory.mktemp("lm_both"))})  # fmt: skip
    return cfg, run_comparison(cfg), Path(cfg.output_dir)


def test_a_short_lm_run_lowers_the_validation_loss_as_pytorch_versions(lm_both):
    _, result, root = lm_both
    hf, pt = _records(root / "results_huggingface"), _records(root / "results_pytorch")
    assert [r["epoch"] for r in hf] == [1, 2, 3] and [r["step"] for r in hf] == [10, 20, 30]
    assert hf[-1]["eval_loss"] < hf[0]["eval_loss"] - 0.1, hf
    assert [set(r) for r in hf] == [set(r) for r in pt]  # epoch, step, train_loss, eval_*, lr, elapsed_s
    # same start, same windows, same recipe, dropout 0: the same numbers up to float rounding
    hf_numbers, pt_numbers = (metrics_without_time(root / f"results_{v}") for v in ("huggingface", "pytorch"))
    for a, b in zip(hf_numbers, pt_numbers, strict=True):
        assert a == pytest.approx(b, rel=1e-4)
    assert result["max_abs_logit_diff_converted"] < 1e-5
    md = (root / "results_comparison" / "comparison.md").read_text()
    assert "bits per character" in md and "(GPT)" in md and "DynamicCache" in md


def test_prompt_continues_a_text_with_a_saved_lm_folder(lm_both, capsys):
    _, _, root = lm_both
    out = root / "results_huggingface"
    argv = ["--checkpoint", str(out), "--prompt", "ROMEO:", "--max_new_tokens", "15"]
    texts = [main_in_process([*argv, "--seed", seed], capsys) for seed in ("1", "1", "2")]
    assert all(code == 0 for code, _, _ in texts), texts
    first = texts[0][1]
    assert first.startswith("ROMEO:") and len(first.rstrip("\n")) == len("ROMEO:") + 15  # no EOS stops it
    assert set(first[len("ROMEO:") :].rstrip("\n")) <= set(TEXT)
    assert texts[0][1] == texts[1][1] != texts[2][1]  # --seed: the same text; another seed: another
    code, printed, err = main_in_process([*argv, "--debug", "--no-do_sample"], capsys)
    assert code == 0, err
    assert "DECODER-ONLY MODEL" in printed and printed.rstrip("\n").splitlines()[-1].startswith("ROMEO:")


def test_both_on_a_toy_task_starts_the_two_from_the_same_weights(tmp_path, capsys):
    from commands.train import both_done_line
    from huggingface_version.compare import run_comparison

    cfg = RunConfig.from_dict({**GPT_COPY, "version": "both", "epochs": 2, "train_size": 500, "eval_size": 32,
                               "parallel_halves": False, "output_dir": str(tmp_path)})  # fmt: skip
    result = run_comparison(cfg)
    assert result["max_abs_logit_diff_converted"] < 1e-5 and result["arch"] == "gpt"
    hf, pt = (metrics_without_time(tmp_path / f"results_{v}") for v in ("huggingface", "pytorch"))
    assert [set(r) for r in hf] == [set(r) for r in pt]
    assert hf[0]["train_loss"] == pytest.approx(pt[0]["train_loss"], rel=1e-4)  # the same start and batches
    assert "both done: exact match pytorch" in both_done_line(result, cfg)
    assert (tmp_path / "results_comparison" / "comparison.json").is_file()


@pytest.mark.slow
def test_an_lm_run_stopped_mid_round_resumes_to_the_same_weights(tmp_path, text_file):
    """SIGTERM after step 15 (round 2 of 3): checkpoint-15, then --resume auto skips round 2's first 5
    batches and ends bitwise equal to the run that was never stopped (dropout on: the RNG state counts)."""
    from safetensors.torch import load_file

    from huggingface_version.train import train_huggingface
    from tests.faults import sigterm_after_step
    from utils.runtime.resilience import TrainingStopped

    def run(folder: Path, **overrides) -> Path:
        settings = {**LM, "version": "huggingface", "data_file": str(text_file), "dropout": 0.1}
        train_huggingface(RunConfig.from_dict({**settings, "output_dir": str(folder), **overrides}))
        return folder / "results_huggingface"

    whole = run(tmp_path / "whole")
    fault = sigterm_after_step(15)
    try:
        with pytest.raises(TrainingStopped):
            run(tmp_path / "stopped")
    finally:
        fault.remove()
    stopped = tmp_path / "stopped" / "results_huggingface"
    assert sorted(p.name for p in stopped.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-15"]
    resumed = run(tmp_path / "stopped", resume="auto")
    final, expected = load_file(resumed / "model.safetensors"), load_file(whole / "model.safetensors")
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert metrics_without_time(resumed) == metrics_without_time(whole)


@pytest.mark.slow
def test_the_hf_gpt_trains_under_torchrun(tmp_path, text_file):
    """2 processes of batch 8 read the windows 1 process of batch 16 reads: the same validation losses;
    a toy task finishes with --max_tokens too (DDP takes the step through logits_to_keep)."""
    from tests.robust_helpers import flags, run_main
    from tests.runs.test_distributed import torchrun

    settings = flags(**{**LM, "version": "huggingface", "data_file": str(text_file)})
    two = torchrun(*settings, "--batch_size", "8", "--output_dir", str(tmp_path / "two"),
                   "--dist_timeout", "60", timeout=120)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("huggingface_version done") == 1, two.stdout
    one = run_main(*settings, "--batch_size", "16", "--output_dir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    records = [_records(tmp_path / run / "results_huggingface") for run in ("two", "one")]
    losses = [[r["eval_loss"] for r in run] for run in records]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    toy = flags(**{**GPT_COPY, "version": "huggingface", "train_size": 256, "eval_size": 16, "epochs": 1,
                   "max_tokens": 96})  # fmt: skip
    run = torchrun(*toy, "--output_dir", str(tmp_path / "toy"), "--dist_timeout", "60", timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(_records(tmp_path / "toy" / "results_huggingface")) == 1


def test_cosine_is_the_pytorch_recipes_adamw_and_schedule_in_the_trainers_terms(tmp_path):
    """--lr_schedule cosine: AdamW at --learning_rate, betas (0.9, 0.99), eps 1e-8, --weight_decay on the
    matrices only (recipe.decays), and cosine_with_min_lr = recipe.cosine_schedule at every step."""
    from transformers import Trainer
    from transformers.optimization import get_scheduler

    from huggingface_version.train import training_arguments
    from tests.factory import tiny_gpt_twins
    from utils.training.recipe import cosine_schedule, decays

    cfg = RunConfig.from_dict({**LM, "version": "huggingface", "data_file": "x.txt", "max_steps": 40})
    args = training_arguments(cfg, tmp_path, torch.device("cpu"))
    assert (args.max_steps, args.eval_steps, args.save_steps, args.logging_steps) == (40, 10, 10, 10)
    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    assert optimizer_cls is torch.optim.AdamW and args.weight_decay == cfg.weight_decay == 0.1
    assert (kwargs["lr"], kwargs["betas"], kwargs["eps"]) == (cfg.learning_rate, (0.9, 0.99), 1e-8)
    _, hf = tiny_gpt_twins()
    decayed = set(Trainer.get_decay_parameter_names(None, hf))  # the Trainer's groups: named_parameters in it
    assert {n for n, _ in hf.named_parameters() if n in decayed} == {n for n, p in hf.named_parameters()
                                                                     if decays(n, p)}  # fmt: skip
    optimizer = optimizer_cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    schedule = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.warmup_steps,
                             num_training_steps=args.max_steps,
                             scheduler_specific_kwargs=args.lr_scheduler_kwargs)  # fmt: skip
    rate, rates = cosine_schedule(cfg.warmup_steps, cfg.max_steps), []
    for _ in range(cfg.max_steps):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    expected = [cfg.learning_rate * rate(step) for step in range(cfg.max_steps)]
    assert rates == pytest.approx(expected, rel=1e-12)
