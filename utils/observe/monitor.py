"""Watching a model while it trains, and the figure catalogue when it is done.

Both implementations use these: the pytorch loop calls `InternalsRecorder.maybe_record`
after each optimizer step, the Hugging Face Trainer does it from a callback. The model
is reached only through `run_with_cache` (via TransformerAnalyzer), so nothing here
knows which implementation it watches; the model family (utils.observe.family) says which
attention is followed and which tokens label the figures.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from utils.data.tasks import first_example
from utils.explorer.data import examples_of_batch
from utils.explorer.page import write_run_explorer
from utils.figures.encoder_figures import encoder_only_figures
from utils.figures.visualization import TransformerVisualizer
from utils.observe.analysis import TransformerAnalyzer
from utils.observe.attention_maps import attention_weights, axes_tokens
from utils.observe.family import ENCODER_ONLY

logger = logging.getLogger(__name__)

TRACKED = ["*.q", "*.q_rot", "*.k", "*.v", "*.weights"]  # what a snapshot captures: small, and enough
MAX_STEP_FIGURES = 6  # attention_step_{N}.png files written, evenly spread over the snapshots


class InternalsRecorder:
    """`--track_internals`: every `every` steps, run one fixed probe example and keep
    Q/K/V statistics per head and the attention maps (eval mode, no gradients, the
    model's training mode restored afterwards, no random numbers drawn).

    qkv_history          [(step, analyze_qkv_statistics(...)), ...]
    attention_snapshots  [(step, (T, S) weights of head 0 of the last layer's tracked attention)]:
                         the decoder's cross-attention, a decoder-only model's self-attention over
                         the probe's prompt and completion (S + T positions), or an encoder-only
                         model's self-attention over its source tokens (a ViT: [CLS] + patches)
    attention_maps       [(step, {cache name: (H, T, S) weights}), ...] for the JSON record
    """

    def __init__(self, probe_src: torch.Tensor, probe_tgt: torch.Tensor, every: int) -> None:
        self.probe_src, self.probe_tgt = probe_src[:1], probe_tgt[:1]
        self.every = max(1, every)
        self.qkv_history: list[tuple[int, dict]] = []
        self.attention_snapshots: list[tuple[int, torch.Tensor]] = []
        self.attention_maps: list[tuple[int, dict[str, torch.Tensor]]] = []
        self.family: str | None = None  # the watched model's family, known at the first record

    def maybe_record(self, model, step: int) -> None:
        if step == 1 or step % self.every == 0:
            self.record(model, step)

    def record(self, model, step: int) -> None:
        if self.qkv_history and self.qkv_history[-1][0] == step:
            return
        analyzer = TransformerAnalyzer(model)
        device = next(model.parameters()).device
        src, tgt = self.probe_src.to(device), self.probe_tgt.to(device)
        _, cache = analyzer.run(src, tgt, names=TRACKED)
        self.family = analyzer.family.name
        self.qkv_history.append((step, analyzer.analyze_qkv_statistics(cache, src, tgt)))
        tracked = attention_weights(cache, analyzer.family.tracked_kind)
        self.attention_snapshots.append((step, torch.as_tensor(tracked)))
        maps = {name: w[0].cpu() for name, w in cache.items() if name.endswith(".weights")}
        self.attention_maps.append((step, maps))

    def to_dict(self) -> dict:
        """Plain JSON data: the probe, the statistics and every attention map, per step."""
        return {
            "family": self.family,
            "probe": {"src": self.probe_src[0].tolist(), "tgt": self.probe_tgt[0].tolist()},
            "qkv_history": [{"step": s, "statistics": stats} for s, stats in self.qkv_history],
            "attention_maps": [
                {"step": s, "weights": {n: w.tolist() for n, w in maps.items()}}
                for s, maps in self.attention_maps
            ],
        }


def write_analysis(
    model,
    src: torch.Tensor,
    tgt: torch.Tensor,
    labels: torch.Tensor,
    src_tokens: list[str],
    tgt_tokens: list[str],
    vocab_tokens: list[str],
    out: Path,
    recorder: InternalsRecorder | None = None,
) -> list[Path]:
    """analysis_report.json and every figure under `out`, from held-out examples.

    `src` (B, S), `tgt` (B, T) BOS-led decoder input and `labels` (B, T) are a batch whose
    row 0 is the example drawn; the statistics average over the whole batch. For a decoder-only
    model `src` is the prompt (may be (B, 0)) and the figures show row 0's prompt + completion. An
    encoder-only model (BERT, ViT) reads `src` alone, ids or (B, C, H, W) images, `tgt` is (B, 0) and
    `labels` its classes (B,) or masked ids (B, S); `tgt_tokens` are not read, and its own figures
    (utils.figures.encoder_figures: [CLS]'s attention over the image, the patch filters, the special
    tokens) go to visualizations/encoder/.
    """
    out = Path(out)
    analyzer = TransformerAnalyzer(model)
    family = analyzer.family
    _, cache = analyzer.run(src, tgt)
    if family is ENCODER_ONLY:
        tgt_tokens = []  # no target side (a ViT's tokenizer names its positions whatever it is asked)
    tokens = {"src": src_tokens, "tgt": tgt_tokens}
    if family.one_sequence:
        tokens["sequence"] = family.sequence_tokens(src_tokens, tgt_tokens)
    report = analyzer.comprehensive_analysis(
        src, tgt, tokens=tokens, save_path=out, labels=labels, cache=cache, vocab_tokens=vocab_tokens
    )
    figure_cache = cache
    if family.one_sequence:  # pads of a short prompt sit inside row 0's sequence: draw row 0 alone
        _, figure_cache = analyzer.run(src[:1, : len(src_tokens)], tgt[:1, : len(tgt_tokens)])
    visualizer = TransformerVisualizer(out)
    history = recorder.qkv_history if recorder and recorder.qkv_history else None
    snapshots = recorder.attention_snapshots if recorder and recorder.attention_snapshots else None
    paths = []
    if family is ENCODER_ONLY:
        with torch.no_grad():
            paths += encoder_only_figures(model, cache, src.cpu(), report, visualizer.root / "encoder",
                                          vocab_tokens)  # fmt: skip
    if snapshots:
        pick = sorted(
            {round(i * (len(snapshots) - 1) / (MAX_STEP_FIGURES - 1)) for i in range(MAX_STEP_FIGURES)}
        )
        rows, cols = axes_tokens(family.tracked_kind, src_tokens, tgt_tokens, family)
        for i in pick:
            step, weights = snapshots[i]
            paths.append(visualizer.plot_attention_step(weights, rows, step, cols))
        (out / "internals.json").write_text(json.dumps(recorder.to_dict()))
    with torch.no_grad():
        paths += visualizer.plot_all(
            report,
            figure_cache,
            src_tokens,
            tgt_tokens,
            embedding_weights=analyzer.embedding_weights(),
            vocab_tokens=vocab_tokens,
            qkv_history=history,
            attention_snapshots=snapshots,
            step=history[-1][0] if history else 0,
            report_folder=out,  # report.md at the top of the results folder, listing every figure
        )
    logger.info("%d figures and analysis_report.json written under %s", len(paths), out)
    return paths


def write_run_figures(model, probe: dict, tokenizer, out: Path, recorder: InternalsRecorder | None,
                      analyse: bool, title: str) -> str | None:  # fmt: skip
    """What a finished run draws from its held-out `probe` batch: with `analyse` (--visualize or
    --track_internals) the report and every figure (write_analysis), and always explorer.html.
    A failure is logged and returned as text (the trained model is saved already: nothing is lost)."""
    error = None
    if analyse:
        try:
            src, tgt = first_example(probe, tokenizer.pad_id)
            write_analysis(model, probe["src"], probe["tgt_in"], probe["tgt_out"], tokenizer.tokens(src[0]),
                           tokenizer.tokens(tgt[0]), tokenizer.id_to_token, out, recorder)  # fmt: skip
        except Exception as err:
            logger.warning("%s: figures failed: %s", title, err, exc_info=True)
            error = f"{type(err).__name__}: {err}"
    examples = examples_of_batch(probe, tokenizer.tokens, tokenizer.pad_id)
    write_run_explorer(model, examples, out, title, recorder, analysed=analyse and error is None)
    return error
