#!/usr/bin/env python
"""transformer-tutorial: train, trace and compare the Transformer of "Attention Is All You Need".

Every flag is a field of utils.runtime.config.RunConfig; `--config FILE.yaml` takes the same
keys, and flags given on the command line win over the file.

This file only parses the flags and dispatches; what each command does lives in commands/
(training runs, decoding, --evaluate), so main.py reads as the list of settings and the exit codes.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time

from commands.decode import bad_byte, decode_with_checkpoint
from commands.evaluate import evaluate_with_checkpoint
from commands.train import run_version
from utils.runtime.config import RunConfig, UserError
from utils.runtime.resilience import Terminated, TrainingStopped, ensure_offline, sigterm_raises

EXAMPLES = """examples:
  python main.py --version pytorch                  train on the reversal task
  python main.py --version pytorch --task addition  3-digit sums, e.g. 123+045 -> 0168
  python main.py --version pytorch --debug --visualize --track_internals
  python main.py --version analysis                 short run + every figure (results_analysis/)
  python main.py --version test                     one-minute self-check
  python main.py --checkpoint results_pytorch/checkpoints/best_model.pt --source "hello"
  python main.py --arch gpt --task lm --data_file input.txt   a character-level GPT on any text file
  python main.py --checkpoint results_pytorch/checkpoints/best_model.pt --prompt "ROMEO:"
"""


class OneLineParser(argparse.ArgumentParser):
    """Bad flags end with one line on stderr and exit code 2, no usage dump."""

    def error(self, message: str) -> None:
        # an argument typed with a line break in it is shown escaped, so the message stays one line
        message = re.sub(r"[\x00-\x1f]", lambda m: repr(m[0])[1:-1], message)
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
    for f in RunConfig.flags():  # the model's shape among them (utils.runtime.config.ModelShape)
        own = "".join(f"; {name}: {value}" for kind in ("task_defaults", "arch_defaults")
                      for name, value in f.metadata.get(kind, {}).items())  # fmt: skip
        help_text = f"{f.metadata['help']} (default: {f.default}{own})"
        if isinstance(f.default, bool):
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(
                f"--{f.name}", type=type(f.default), choices=f.metadata.get("choices"), help=help_text
            )
    for name in ("bf16", "fp16"):  # the older spellings (utils.runtime.config._precision_spelt)
        parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction,
                            help=f"the same as --precision {name}")  # fmt: skip
    return parser


def load_yaml(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as err:
        raise UserError(f"cannot read --config {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise UserError(f"--config {path} is not UTF-8 text: {bad_byte(err)}") from err
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


def run(cfg: RunConfig, given: frozenset = frozenset()) -> int:
    """Dispatch to the command the flags name (commands/); `given` names the settings the user gave
    explicitly (a checkpoint's architecture must not contradict those)."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # > 1: started by torchrun
    if processes > 1 and (cfg.version not in ("pytorch", "huggingface") or cfg.checkpoint or cfg.evaluate):
        what = "--checkpoint" if cfg.checkpoint or cfg.evaluate else f"--version {cfg.version}"
        raise UserError(f"under torchrun only --version pytorch or huggingface trains; run {what} "
                        f"as a single process: python main.py ...")  # fmt: skip
    if cfg.evaluate:
        return evaluate_with_checkpoint(cfg)
    if cfg.checkpoint:
        return decode_with_checkpoint(cfg, given)
    if cfg.source or cfg.interactive or cfg.explore:
        raise UserError("--source, --interactive and --explore need --checkpoint PATH")
    return run_version(cfg)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ensure_offline()  # before transformers is imported: nothing here needs the network
    try:
        with sigterm_raises():  # training installs its own, graceful handler (utils.runtime.resilience)
            values = parse_values(argv)
            return run(RunConfig.from_dict(values), frozenset(values))
    except UserError as err:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process has it: one says it
            # one line whatever a message quotes (a value read from a file may hold newlines)
            print(
                "main.py: error: " + " ".join(line.strip() for line in str(err).splitlines()), file=sys.stderr
            )
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
