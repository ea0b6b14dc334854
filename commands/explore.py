"""The attention explorer of one input: `--checkpoint PATH --source TEXT --explore` (or `--prompt TEXT`),
and `show_attention` for a notebook.

The model reads the input as `--debug` traces it: a translation (or toy-task) model decodes the source
first and the page shows the forward pass that scores its own output; a GPT's prompt is read with what
it wrote after it; BERT and ViT read the source alone. The page (utils/explorer) goes beside the
checkpoint's run, in the results folder that holds `checkpoints/` (or the Hugging Face folder itself),
as explorer_input.html: the run's own explorer.html stays. The run's internals.json (its
--track_internals snapshots) and analysis_report.json are read from there when they exist.
"""

from __future__ import annotations

from pathlib import Path

from commands.checkpoints import Loaded, load_checkpoint_for_decoding, loaded_model
from utils.explorer.data import explorer_data
from utils.explorer.page import notebook_view, read_json, report_patterns, write_explorer
from utils.runtime.config import UserError

INPUT_PAGE = "explorer_input.html"


def results_folder(checkpoint: str | Path) -> Path:
    """The folder a checkpoint's run wrote: a .pt file's (above checkpoints/), or the HF folder."""
    path = Path(checkpoint)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def input_example(loaded: Loaded, text: str, output: str | None = None, prompt: bool = False) -> tuple:
    """(src, tgt_in, to_tokens) of the forward pass to draw; `output`: what the model wrote (decoded
    here when None); `prompt`: `text` (and `output`) is a GPT's text, read as one sequence."""
    model, tokenizer = loaded.model, loaded.tokenizer
    if prompt:
        if loaded.prompt_example is None:
            raise UserError("--explore with --prompt needs an --arch gpt checkpoint")
        return loaded.prompt_example(model, tokenizer, text + (output or ""))
    if output is None:
        output = loaded.translate(model, tokenizer, [text], 1, 0.6, 0)[0]
    return loaded.example(model, tokenizer, text, output)


def explore_input(checkpoint: str, loaded: Loaded, text: str, output: str | None = None,
                  prompt: bool = False) -> Path:  # fmt: skip
    """explorer_input.html of one input in the checkpoint's results folder; its path."""
    folder = results_folder(checkpoint)
    path = folder / INPUT_PAGE
    example = input_example(loaded, text, output, prompt)
    title = f"Attention explorer: {Path(checkpoint).name} reading {text[:60]!r}"
    try:
        write_explorer(loaded.model, [example], path, title, read_json(folder / "internals.json"),
                       read_json(folder / "analysis_report.json"))  # fmt: skip
    except OSError as err:
        raise UserError(f"--explore: cannot write {path}: {err.strerror or err}") from err
    return path


def show_attention(model, text: str, tokenizer=None, output: str | None = None, prompt: bool = False,
                   height: int = 900, device: str = "cpu"):  # fmt: skip
    """The explorer inline in a notebook (Jupyter, Colab), with no network request.

    `model`: either version's model in memory (then `tokenizer` is its tokenizer), or the path of a
    checkpoint (a .pt file or a save_pretrained folder; its run's snapshots and analysis come along).
    `text`: the input (`prompt=True`: a GPT's text); `output`: what the model wrote for it (decoded
    when None)."""
    report = internals = None
    if isinstance(model, (str, Path)):
        loaded = load_checkpoint_for_decoding(str(model), device)
        folder = results_folder(model)
        internals, report = read_json(folder / "internals.json"), read_json(folder / "analysis_report.json")
    else:
        if tokenizer is None:
            raise UserError("show_attention(model, text, tokenizer): a model in memory needs its tokenizer")
        loaded = loaded_model(model.eval(), tokenizer)
    example = input_example(loaded, text, output, prompt)
    data = explorer_data(loaded.model, [example], internals, title=f"Attention explorer: {text[:60]!r}")
    data["report"] = report_patterns(report)
    return notebook_view(data, height)
