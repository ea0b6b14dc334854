"""--version pytorch | huggingface | both | analysis | test: the runs, each ending with one line.

The training logs scroll by during a run; the last line printed is the one that answers "how did it
go and where are the files": the score on held-out data, the wall time and the results folder.
"""

from __future__ import annotations

from pathlib import Path

from utils.runtime.config import RunConfig
from utils.runtime.console import hide_loading_bars


def done_line(name: str, summary: dict, folder: str, cfg: RunConfig) -> str:
    """'pytorch_version done: exact match 98.40% on 500 held-out examples in 61s; results in ...'."""
    if cfg.task == "lm":
        final = summary["final"]
        loss, bpc, ppl = final["eval_loss"], final["eval_bits_per_char"], final["eval_perplexity"]
        score = (f"validation loss {loss:.4f} nats/token ({bpc:.3f} bits per character, perplexity "
                 f"{ppl:.2f}) after {summary['steps']} steps")  # fmt: skip
    elif cfg.task == "mlm":
        final = summary["final"]
        score = (f"masked tokens: accuracy {final['eval_masked_accuracy']:.2%}, loss "
                 f"{final['eval_loss']:.4f} nats (perplexity {final['eval_perplexity']:.2f}) after "
                 f"{summary['steps']} steps")  # fmt: skip
    elif "eval_accuracy" in summary["final"]:  # a classifier (text, or the digits' images)
        held_out = summary.get("data", {}).get("test", cfg.eval_size)
        score = f"accuracy {summary['final']['eval_accuracy']:.2%} on {held_out} held-out examples"
    elif cfg.task == "translation":
        final = summary.get("final_translation", {})
        best = final.get("best")
        beam = f", {best} with beam {final['beam_size']}: {final[best]['bleu']:.2f}" if best else ""
        score = f"validation BLEU {summary['best_eval_bleu']:.2f} (best epoch, greedy{beam})"
    else:
        score = f"exact match {summary['final']['eval_exact_match']:.2%} on {cfg.eval_size} held-out examples"
        if summary.get("averaged_is_final"):  # --checkpoint_average: the final model is a mean
            epochs = summary["averaged_epochs"]
            score += f" (mean of the weights of epochs {epochs[0]}-{epochs[-1]})"
    folder = Path(cfg.output_dir) / folder
    return f"{name} done: {score} in {summary['wall_time_s']:.0f}s; results in {folder}/"


def both_done_line(result: dict, cfg: RunConfig) -> str:
    """The one line of --version both: each version's score and time, and how far their logits differ."""
    pt, hf = result["pytorch"], result["huggingface"]
    if cfg.task == "lm":  # a language model: its validation loss
        score = (f"validation loss (nats/token) pytorch {pt['final_eval_loss']:.4f} "
                 f"({pt['wall_time_s']:.0f}s), huggingface {hf['final_eval_loss']:.4f} "
                 f"({hf['wall_time_s']:.0f}s)")  # fmt: skip
    elif cfg.task == "mlm":  # a masked LM: the loss over the masked tokens
        score = (f"masked-token loss (nats) pytorch {pt['final_eval_loss']:.4f} ({pt['wall_time_s']:.0f}s), "
                 f"huggingface {hf['final_eval_loss']:.4f} ({hf['wall_time_s']:.0f}s)")  # fmt: skip
    elif "final_eval_accuracy" in pt:  # a classifier (text, or the digits' images)
        score = (f"accuracy pytorch {pt['final_eval_accuracy']:.2%} ({pt['wall_time_s']:.0f}s), "
                 f"huggingface {hf['final_eval_accuracy']:.2%} ({hf['wall_time_s']:.0f}s)")  # fmt: skip
    else:
        score = (f"exact match pytorch {pt['final_eval_exact_match']:.2%} ({pt['wall_time_s']:.0f}s), "
                 f"huggingface {hf['final_eval_exact_match']:.2%} ({hf['wall_time_s']:.0f}s)")  # fmt: skip
    return (
        f"both done: {score}; converted logits differ by "
        f"{result['max_abs_logit_diff_converted']:.1e}; side by side in "
        f"{Path(cfg.output_dir) / 'results_comparison'}/comparison.md"
    )


def run_version(cfg: RunConfig) -> int:
    """Train (or self-check) as --version says; the exit code. The versions are imported only when
    chosen: transformers alone takes seconds to import."""
    if cfg.version in ("huggingface", "both"):
        hide_loading_bars()
    if cfg.version == "pytorch":
        from pytorch_version.train import train

        summary = train(cfg)  # under torchrun only rank 0 has a summary
        if summary:
            print(done_line("pytorch_version", summary, "results_pytorch", cfg))
    elif cfg.version == "huggingface":
        from huggingface_version.train import train_huggingface

        summary = train_huggingface(cfg)
        if summary:
            print(done_line("huggingface_version", summary, "results_huggingface", cfg))
    elif cfg.version == "both":
        from huggingface_version.compare import run_comparison
        from utils.runtime.lock import assert_free

        for name in ("results_pytorch", "results_huggingface", "results_comparison"):  # before either starts
            assert_free(Path(cfg.output_dir) / name)
        print(both_done_line(run_comparison(cfg), cfg))
    elif cfg.version == "analysis":
        from pytorch_version.demo import analysis_demo

        summary = analysis_demo(cfg)  # any --arch: its score is read as done_line reads a run's
        print(done_line("analysis demo", summary, "results_analysis", cfg)
              + " (figures, analysis_report.json and report.md)")  # fmt: skip
    else:  # test
        from selfcheck import run_selfcheck

        return run_selfcheck()
    return 0
