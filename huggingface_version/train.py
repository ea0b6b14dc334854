"""Training the Hugging Face model with the Trainer; writes results_huggingface/.

Any family (--arch): the encoder-decoder (TutorialTransformerForConditionalGeneration) on a toy task
or translation, the decoder-only GPT (TutorialGPTForCausalLM) on a toy task (prompt BOS completion
EOS, the loss on the completion) or on a text (--task lm), or the encoder-only BERT (a classification:
palindrome, sorted, majority, brackets; or a masked LM, --task mlm) and ViT (--task digits), trained by
encoder_trainer.py on pytorch_version's own data (encoder_run_data.py) and scored as pytorch_version
scores them (accuracy; the masked tokens' loss, accuracy and perplexity). Same data
(huggingface_version/run_data.py: the data of pytorch_version, same seed), same model, same recipe and
same metrics as pytorch_version.train (exact match; BLEU and chrF for translation; a language model's
validation loss, bits per character and perplexity); what differs is who runs the loop
(custom_trainer.py; causal_trainer.py for the GPT, encoder_trainer.py for BERT and ViT). The tokenizer
is the run's own (characters or BPE) as a PreTrainedTokenizerFast (tokenization.py); a ViT's folder
holds an image processor instead (image_processing_encoder.py).

Writes under `<output_dir>/results_huggingface/`: model.safetensors, config.json (with an auto_map),
generation_config.json, the model's code (configuration.py, modeling.py, attention.py, layers.py,
stacks.py; a GPT's configuration_gpt.py, modeling_gpt.py: save_pretrained copies them,
huggingface_version/__init__.py says why), tokenizer.json + tokenizer_config.json, training_args.bin,
summary.json, logs/{train.log,metrics.jsonl}, training_curves.png and, with --visualize or
--track_internals, visualizations/, analysis_report.json [and internals.json] (utils.observe.monitor,
shared with pytorch_version). The folder loads without this repository:
`AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True)` (a GPT: AutoModelForCausalLM,
and `pipeline("text-generation", model=folder, trust_remote_code=True)`; a BERT's or ViT's:
pipeline "fill-mask", "text-classification" or "image-classification").
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq, PrinterCallback

from huggingface_version.arguments import training_arguments
from huggingface_version.averaging import average_last_epochs
from huggingface_version.callbacks import (
    CLASSIFY_KEYS,
    LM_KEYS,
    MLM_KEYS,
    InternalsCallback,
    MetricsLogCallback,
    finish_wandb,
    start_wandb,
)
from huggingface_version.causal_trainer import TutorialCausalLMTrainer
from huggingface_version.convert import (
    HFModel,
    convert_state_dict,
    hf_class_for,
    hf_config_of,
    model_config_of,
    pytorch_to_hf,
)
from huggingface_version.custom_trainer import TutorialSeq2SeqTrainer
from huggingface_version.encoder_run_data import check_encoder_flags
from huggingface_version.encoder_trainer import TutorialEncoderTrainer
from huggingface_version.resume import (
    ResumeCallback,
    disk_errors_in,
    load_state,
    resume_checkpoint,
    resume_errors_in,
    save_model_atomically,
)
from huggingface_version.run_data import HFRunData, load_hf_run_data
from pytorch_version.evaluate import lower_is_better, selection_metric
from utils.data.tasks import first_example
from utils.fast import SpeedUps
from utils.figures.training_curves import plot_training_curves
from utils.observe.monitor import InternalsRecorder, write_run_figures
from utils.observe.trace_printer import trace_example
from utils.runtime import precision
from utils.runtime.checkpoint import weights_fingerprint
from utils.runtime.config import (
    ENCODER_ONLY,
    STEP_TASKS,
    RunConfig,
    UserError,
    resolve_device,
)
from utils.runtime.distributed import World, shutdown
from utils.runtime.lock import results_folder_lock
from utils.runtime.precision import check_precision
from utils.runtime.resilience import atomic_write_json, ensure_writable
from utils.runtime.tracking import Tracker, add_file_log

logger = logging.getLogger(__name__)


def build_hf_model(cfg: RunConfig, tokenizer, fields: dict | None = None) -> HFModel:
    """A freshly initialised model of the configured family and shape (as pytorch_version.train.build_model),
    from the toolkit's tokenizer of the run: the encoder-decoder, the GPT as a causal LM, a BERT (masked
    LM, or classifier when `fields`, what the data says, has labels) or a ViT."""
    ids = {"pad_id": tokenizer.pad_id, "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id}
    ids |= fields or {}  # an encoder-only task's labels, [MASK] and [CLS] ids, images
    model_cfg = cfg.model_config(tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, **ids)
    hf_class = hf_class_for(cfg.arch, bool(model_cfg.labels))
    model = hf_class(hf_config_of(model_cfg, task=cfg.task))  # the task: inference.hf_task
    return SpeedUps.from_flag(cfg.fast).plug_in(model)  # module swaps: the state dict stays HF's


def train_huggingface(cfg: RunConfig, init_from_pytorch=None) -> dict:
    """Train on the configured toy task and write results_huggingface/; returns the summary.

    `init_from_pytorch`: a pytorch_version Transformer whose (converted) weights are the
    starting point, so both versions can start from the same initialisation (--version both).
    """
    out = Path(cfg.output_dir) / "results_huggingface"
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, cfg.version, device)
    if cfg.arch in ENCODER_ONLY:
        check_encoder_flags(cfg)
    resume_from = resume_checkpoint(cfg, out) if cfg.resume else None
    saved = load_state(resume_from, cfg) if resume_from else None  # refused before anything is written
    cfg = precision.resolve(cfg, device, "huggingface", saved and saved["run_config"].get("precision"))
    args = training_arguments(cfg, out, device)  # under torchrun accelerate joins the group here
    world = World(args.process_index, args.world_size, args.local_process_index)  # rank 0 writes and logs
    if not world.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        with results_folder_lock(out, enabled=world.is_main):  # one run a folder (utils/runtime/lock.py)
            return _train(cfg, init_from_pytorch, out, args, resume_from, saved, world)
    finally:
        shutdown(world)


def _train(cfg, init_from_pytorch, out, args, resume_from, saved, world: World) -> dict:
    main = world.is_main
    if main:
        ensure_writable(out / "logs")
    log_handler = add_file_log(out / "logs" / "train.log") if main else None
    torch.manual_seed(cfg.seed)

    data = load_hf_run_data(cfg, world.rank, world.size, args.device)
    tokenizer = data.tokenizer
    model = build_hf_model(cfg, data.data_tokenizer, data.model_fields)
    if init_from_pytorch is not None:
        expected = model_config_of(model.config)
        if init_from_pytorch.config != expected:
            raise UserError(f"init_from_pytorch has config {init_from_pytorch.config}, expected {expected}")
        model = pytorch_to_hf(init_from_pytorch).train()
        model.config.task = cfg.task
        model = SpeedUps.from_flag(cfg.fast).plug_in(model)
    config_record = {"run": cfg.to_dict(), "model": model_config_of(model.config).to_dict()}
    # the start, in pytorch_version's key names: --version both checks it is the pytorch half's
    pt_keys = convert_state_dict(model.state_dict(), to_hf=False, arch=cfg.arch)
    initial_weights = None if resume_from else weights_fingerprint(pt_keys)
    report_to = start_wandb(cfg, out, config_record) if main else "none"

    args.report_to = [] if report_to == "none" else [report_to]  # as __post_init__ would have listed it
    metrics_file = out / "logs" / "metrics.jsonl" if main else None  # other ranks: in memory only
    tracker = Tracker(metrics_file, history=saved["history"] if saved else None)
    lm, encoder = cfg.task == "lm", cfg.arch in ENCODER_ONLY
    keys = {"lm": LM_KEYS, "mlm": MLM_KEYS}.get(cfg.task, CLASSIFY_KEYS if encoder else None)
    pacing = {"metric_keys": keys} if keys else {}  # what a record holds
    if cfg.task in STEP_TASKS:
        pacing["round_steps"] = cfg.eval_every  # a round's records
    callbacks = [MetricsLogCallback(tracker, cfg.stop_at_exact_match, announce=args.disable_tqdm,
                                    time_budget_minutes=cfg.time_budget_minutes, **pacing)]  # fmt: skip
    # the probe's first example, as pytorch_version.train takes it
    probe_src, probe_tgt = first_example(data.probe, data.data_tokenizer.pad_id)
    recorder = (
        InternalsRecorder(probe_src, probe_tgt, cfg.track_every) if cfg.track_internals and main else None
    )
    if recorder is not None:
        callbacks.append(InternalsCallback(recorder))
    trainer = _trainer(cfg, model, args, data, callbacks)
    resumer = ResumeCallback(cfg, trainer, tracker, recorder, saved)  # Ctrl-C / SIGTERM, tutorial_state.pt
    trainer.add_callback(resumer)
    logger.info("huggingface_version: task=%s (%s), %s, %s parameters, device=%s", cfg.task, cfg.arch,
                data.description, f"{model.num_parameters():,}", args.device.type)  # fmt: skip

    if args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # no progress bar, and no log dicts either
    # evaluation adds its defaults to it (an encoder-only model generates nothing and has none)
    generation_config = copy.deepcopy(getattr(model, "generation_config", None))
    if lm:  # the text has no EOS (nor <unk>): never written, so `generate` writes max_new_tokens
        never = {tokenizer.eos_token_id, tokenizer.unk_token_id}
        generation_config.suppress_tokens = sorted({*generation_config.suppress_tokens, *never})
    if cfg.debug and main:
        src, tgt = data.debug_example
        names = data.data_tokenizer.tokens if encoder else tokenizer.convert_ids_to_tokens
        trace = trace_example(model, src, tgt, names, cfg.debug_layers, cfg.debug_heads)
        logger.info("--debug: forward pass of one example before training\n%s", trace)
    start = time.perf_counter()
    try:
        with disk_errors_in(out):  # a full disk in the Trainer's own saving: one line, not a traceback
            with resume_errors_in(resume_from, resumer):
                trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            resumer.raise_if_stopped(trainer.state)
            steps = cfg.task in STEP_TASKS  # one stream, no epochs to average
            averaged = {} if steps else average_last_epochs(cfg, out, model, trainer, tracker.history)
            if generation_config is not None:
                model.generation_config = generation_config
            save_model_atomically(trainer, out)  # weights, config, generation config, tokenizer files
    finally:
        resumer.stop.uninstall()
        finish_wandb(report_to)
        tracker.finish()
        if log_handler is not None:
            logging.getLogger().removeHandler(log_handler)
            log_handler.close()  # the file, which removing the handler leaves open (a ResourceWarning)
    if not main:
        return {}
    wall_time = time.perf_counter() - start
    logger.info("huggingface_version: examples %r", trainer.last_predictions[:2])
    summary = _summary(cfg, tracker.history, averaged, wall_time, model, trainer, data, report_to)
    if data.finish is not None:  # encoder-only: the confusion matrix or the masking, and their figures
        summary |= data.finish(model, out)
    summary["config"] = config_record
    summary["initial_weights"] = initial_weights
    figures_error = write_run_figures(
        model,
        data.probe,
        data.data_tokenizer,
        out,
        recorder,
        cfg.visualize or cfg.track_internals,
        f"huggingface_version: {cfg.task}",
    )
    if figures_error:
        summary["figures_error"] = figures_error
    atomic_write_json(out / "summary.json", summary)
    return summary


def _trainer(cfg: RunConfig, model, args, data: HFRunData, callbacks: list) -> TutorialSeq2SeqTrainer:
    """The family's trainer over the run's data (the encoder-decoder's, or the GPT's)."""
    common = dict(model=model, args=args, train_dataset=data.train_dataset, eval_dataset=data.eval_dataset,
                  processing_class=data.tokenizer, callbacks=callbacks, label_smoothing=cfg.label_smoothing,
                  max_new_tokens=cfg.max_length, references=data.references,
                  translation=cfg.task == "translation", max_tokens=cfg.max_tokens,
                  max_nonfinite_steps=cfg.max_nonfinite_steps, speed=SpeedUps.from_flag(cfg.fast),
                  lengths=data.lengths)  # fmt: skip
    if cfg.arch in ENCODER_ONLY:  # no generation, no token batches: pytorch_version's batches, its scoring
        common |= {"max_new_tokens": 0, "max_tokens": 0, "lengths": None}
        return TutorialEncoderTrainer(data_collator=data.collator, score=data.evaluate, **common)
    collator = DataCollatorForSeq2Seq(data.tokenizer, model=model, label_pad_token_id=-100)
    if cfg.arch == "gpt":
        return TutorialCausalLMTrainer(data_collator=collator, corpus=data.corpus, run_config=cfg, **common)
    return TutorialSeq2SeqTrainer(data_collator=collator, **common)


def _summary(cfg, history, averaged, wall_time, model, trainer, data, report_to) -> dict:
    """summary.json: the final and best scores, the time, the model's size and the settings."""
    plot_training_curves(history, Path(trainer.args.output_dir) / "training_curves.png",
                         f"huggingface_version: {cfg.task}")  # fmt: skip
    last_epoch = {k: v for k, v in history[-1].items() if k.startswith("eval_")}
    best_key = selection_metric(cfg)  # pytorch_version's: BLEU, exact match, accuracy or a loss
    best = min if lower_is_better(cfg) else max
    return {
        "version": "huggingface",
        "task": cfg.task,
        "final": averaged["averaged"] if averaged.get("averaged_is_final") else last_epoch,  # the saved model
        "last_epoch": last_epoch,
        **averaged,
        f"best_{best_key}": best(r[best_key] for r in history),
        "wall_time_s": wall_time,
        "steps": trainer.state.global_step,  # optimizer steps
        **data.report,
        "parameters": model.num_parameters(),
        "report_to": report_to,
    }
