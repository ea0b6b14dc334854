#!/usr/bin/env python
"""transformer-tutorial: train, trace and compare the Transformer of "Attention Is All You Need".

Every flag is a field of utils.runtime.config.RunConfig; `--config FILE.yaml` takes the same
keys, and flags given on the command line win over the file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from utils.runtime.compatibility import mismatched_flags
from utils.runtime.config import RunConfig, UserError, resolve_device
from utils.runtime.resilience import Terminated, TrainingStopped, ensure_offline, sigterm_raises

logger = logging.getLogger("transformer_tutorial")

EXAMPLES = """examples:
  python main.py --version pytorch                  train on the reversal task
  python main.py --version pytorch --task addition  3-digit sums, e.g. 123+045 -> 0168
  python main.py --version pytorch --debug --visualize --track_internals
  python main.py --version analysis                 short run + every figure (results_analysis/)
  python main.py --version test                     one-minute self-check
  python main.py --checkpoint results_pytorch/checkpoints/best_model.pt --source "hello"
"""


class OneLineParser(argparse.ArgumentParser):
    """Bad flags end with one line on stderr and exit code 2, no usage dump."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="main.py",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # so we know which flags were given explicitly
    )
    parser.add_argument("--config", help="YAML file whose keys are these flags' names")
    for f in RunConfig.flags():
        own = "".join(f"; {task}: {value}" for task, value in f.metadata.get("task_defaults", {}).items())
        help_text = f"{f.metadata['help']} (default: {f.default}{own})"
        if isinstance(f.default, bool):
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(
                f"--{f.name}", type=type(f.default), choices=f.metadata.get("choices"), help=help_text
            )
    return parser


def load_yaml(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as err:
        raise UserError(f"cannot read --config {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise UserError(f"--config {path} is not UTF-8 text: {_bad_byte(err)}") from err
    except yaml.YAMLError as err:
        raise UserError(f"--config {path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict):
        raise UserError(f"--config {path} must hold a mapping of flag names to values")
    return data


def parse_values(argv: list[str] | None = None) -> dict:
    """The settings given explicitly, in the --config file or as flags (flags win)."""
    args = vars(build_parser().parse_args(argv))
    values = load_yaml(args.pop("config")) if "config" in args else {}
    values.update(args)
    return values


def parse_config(argv: list[str] | None = None) -> RunConfig:
    return RunConfig.from_dict(parse_values(argv))


def _bad_byte(err: UnicodeError) -> str:
    bad = err.object[err.start]
    bad = bad if isinstance(bad, int) else ord(bad) - 0xDC00  # argv keeps bad bytes as U+DCxx
    return f"byte 0x{bad:02x} at position {err.start}"


def _utf8(text: str, what: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UserError(f"{what} is not valid UTF-8 text: {_bad_byte(err)}") from err
    return text


def _input_lines():
    """stdin line by line; a line that is not UTF-8 ends the session with one error line."""
    stream = getattr(sys.stdin, "buffer", sys.stdin)
    for number, line in enumerate(stream, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"input line {number} is not valid UTF-8 text: {_bad_byte(err)}") from err
        yield line


def decode_with_checkpoint(cfg: RunConfig, given: frozenset = frozenset()) -> int:
    """--checkpoint PATH with --source or --interactive: a .pt file (pytorch_version) or a
    save_pretrained folder (huggingface_version). Architecture flags given explicitly must
    match the checkpoint's; the others are read from it."""
    if not cfg.source and not cfg.interactive:
        raise UserError("--checkpoint needs --source TEXT or --interactive")
    _utf8(cfg.source, "--source")
    if Path(cfg.checkpoint).is_dir():
        from huggingface_version.convert import model_config_of
        from huggingface_version.inference import load_hf_for_inference, translate_hf

        model, tokenizer = load_hf_for_inference(
            cfg.checkpoint, resolve_device(cfg.device), cfg.fast, cfg.trust_remote_code
        )
        model_config = model_config_of(model.config)
        trace = None
        translate = translate_hf
        if cfg.debug:
            from huggingface_version.inference import trace_translation_hf as trace
    else:
        from pytorch_version.inference import load_for_inference, trace_translation, translate

        model, tokenizer, _ = load_for_inference(cfg.checkpoint, resolve_device(cfg.device), cfg.fast)
        model_config = model.config
        trace = trace_translation if cfg.debug else None
    differences = mismatched_flags(cfg, given, model_config)
    if differences:
        raise UserError(f"checkpoint {cfg.checkpoint} does not fit the flags: {differences}")

    def decode(text: str) -> str:
        output = translate(model, tokenizer, [text], cfg.beam_size, cfg.length_penalty, cfg.max_length)[0]
        if trace is not None:
            print(trace(model, tokenizer, text, output, cfg.debug_layers, cfg.debug_heads))
        return output

    if cfg.interactive:
        print("Type an input and press Enter (Ctrl-D to quit).")
        for line in _input_lines():
            if line.strip():
                print(decode(line.rstrip("\n")))
        return 0
    print(f"source: {cfg.source}\noutput: {decode(cfg.source)}")
    return 0


def evaluate_with_checkpoint(cfg: RunConfig) -> int:
    """--evaluate: translate PREFIX.src_lang with the checkpoint (a .pt file or a results_huggingface
    folder), score it against PREFIX.tgt_lang, write the hypotheses and test_metrics.json next to it."""
    from functools import partial

    from utils.training.translation_eval import evaluate_test_set, format_scores

    if Path(cfg.checkpoint).is_dir():
        from huggingface_version.inference import load_hf_for_inference
        from huggingface_version.inference import translate_hf as translate

        model, tokenizer = load_hf_for_inference(
            cfg.checkpoint, resolve_device(cfg.device), trust_remote_code=cfg.trust_remote_code
        )
    else:
        from pytorch_version.inference import load_for_inference, translate

        model, tokenizer, _ = load_for_inference(cfg.checkpoint, resolve_device(cfg.device))
    decoding = dict(beam_size=cfg.beam_size, alpha=cfg.length_penalty, max_length=cfg.max_length)
    batch = partial(translate, model, tokenizer, **decoding)
    metrics = evaluate_test_set(batch, cfg.checkpoint, cfg.test_prefix, cfg.src_lang, cfg.tgt_lang, decoding)
    print(format_scores(metrics))
    return 0


def _done(name: str, summary: dict, folder: str, cfg: RunConfig) -> None:
    if cfg.task == "translation":
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
    print(f"{name} done: {score} in {summary['wall_time_s']:.0f}s; results in {folder}/")


def _hf_console() -> None:
    """No "Loading weights" progress bars from transformers: the console is for the run's own story."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def run(cfg: RunConfig, given: frozenset = frozenset()) -> int:
    """Dispatch on --version; `given` names the settings the user gave explicitly."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # > 1: started by torchrun
    if processes > 1 and (cfg.version not in ("pytorch", "huggingface") or cfg.checkpoint or cfg.evaluate):
        what = "--checkpoint" if cfg.checkpoint or cfg.evaluate else f"--version {cfg.version}"
        raise UserError(f"under torchrun only --version pytorch or huggingface trains; run {what} "
                        f"as a single process: python main.py ...")  # fmt: skip
    if cfg.version in ("huggingface", "both") or Path(cfg.checkpoint or "/nonexistent").is_dir():
        _hf_console()
    if cfg.evaluate:
        return evaluate_with_checkpoint(cfg)
    if cfg.checkpoint:
        return decode_with_checkpoint(cfg, given)
    if cfg.source or cfg.interactive:
        raise UserError("--source and --interactive need --checkpoint PATH")
    if cfg.version == "pytorch":
        from pytorch_version.train import train

        summary = train(cfg)  # under torchrun only rank 0 has a summary
        if summary:
            _done("pytorch_version", summary, "results_pytorch", cfg)
    elif cfg.version == "huggingface":
        from huggingface_version.train import train_huggingface

        summary = train_huggingface(cfg)
        if summary:
            _done("huggingface_version", summary, "results_huggingface", cfg)
    elif cfg.version == "both":
        from huggingface_version.compare import run_comparison

        result = run_comparison(cfg)
        pt, hf = result["pytorch"], result["huggingface"]
        print(
            f"both done: exact match pytorch {pt['final_eval_exact_match']:.2%} "
            f"({pt['wall_time_s']:.0f}s), huggingface {hf['final_eval_exact_match']:.2%} "
            f"({hf['wall_time_s']:.0f}s); converted logits differ by "
            f"{result['max_abs_logit_diff_converted']:.1e}; side by side in "
            f"{Path(cfg.output_dir) / 'results_comparison'}/comparison.md"
        )
    elif cfg.version == "analysis":
        from pytorch_version.demo import analysis_demo

        summary = analysis_demo(cfg)
        print(
            f"analysis demo done ({summary['wall_time_s']:.0f}s, exact match "
            f"{summary['final']['eval_exact_match']:.2%}): figures, analysis_report.json and report.md "
            f"in {Path(cfg.output_dir) / 'results_analysis'}/"
        )
    else:  # test
        from selfcheck import run_selfcheck

        return run_selfcheck()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ensure_offline()  # before transformers is imported: nothing here needs the network
    try:
        with sigterm_raises():  # training installs its own, graceful handler (utils.runtime.resilience)
            values = parse_values(argv)
            return run(RunConfig.from_dict(values), frozenset(values))
    except UserError as err:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process has it: one says it
            print(f"main.py: error: {err}", file=sys.stderr)
        else:  # torchrun stops every process as soon as one fails: let rank 0 say why first
            time.sleep(5)
        return 2
    except TrainingStopped as err:  # already logged, with the command that resumes
        return err.exit_code
    except KeyboardInterrupt:
        print("main.py: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("main.py: terminated", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
