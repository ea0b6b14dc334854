"""The encoder-only models' training speed side by side with transformers' BERT and ViT, in one run.

    python benchmarks/encoder_speed.py [--rounds 5] [--threads 2]

Masked LM: tokens per second of a full optimizer step (forward, loss, backward, fused AdamW, gradient
clipping) on batches masked as `--task mlm` masks them (utils/data/masking.py: 15% chosen) over a
72-token vocabulary (tinyshakespeare's characters and BERT's specials), at `--task mlm`'s defaults
(2 layers x 128, 4 heads, windows of 64, batch 64; `--layers 4 --d_model 256 --context 128
--batch 32` for a larger one), of
    ours      pytorch_version's BERT with the toolkit's speed-ups, through the trainer's step
              (utils.fast.LabelledLogits: the last layer and the head at the chosen rows only)
    ours_hf   huggingface_version's TutorialBertForMaskedLM, forward with labels (the Trainer's)
    bert      transformers' BertForMaskedLM of the same options (post-LN, GELU, learned positions),
              forward with labels
ViT: images per second of the same step on the digits' shape (8 x 8 grey, patches of 2, 10 classes),
--task digits' defaults (2 layers x 128, batch 32; ours computes the last layer at [CLS] only): ours,
ours_hf (TutorialViTForImageClassification) and transformers' ViTForImageClassification.
`--bf16`: every model under CPU bfloat16 autocast. Rounds alternate the models; medians are
reported and the ratios ours / transformers' are the headline. Prints the CPU's flags; writes
benchmarks/results/encoder_speed.json (encoder_speed_bf16.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.gpt_speed import round_robin  # noqa: E402
from benchmarks.speed_pieces import cpu_flags  # noqa: E402

VOCAB = 72


def configs(kind: str, args):
    from utils.runtime.config import ModelConfig

    D = args.d_model if kind == "bert" else args.vit_d_model
    shape = dict(hidden_size=D, num_layers=args.layers, num_heads=args.heads, ffn_size=4 * D, dropout=0.0,
                 positions="learned", activation="gelu", init="normal")  # fmt: skip
    if kind == "bert":
        return ModelConfig(arch="bert", embedding_norm=True, src_vocab_size=VOCAB, tgt_vocab_size=VOCAB,
                           max_position=args.context, mask_id=6, cls_id=4, **shape)  # fmt: skip
    return ModelConfig(arch="vit", norm_first=True, src_vocab_size=1, tgt_vocab_size=1, bos_id=0, eos_id=0,
                       image_size=8, channels=1, patch_size=2, labels=tuple("0123456789"),
                       **shape)  # fmt: skip


def build(kind: str, name: str, args):
    """Ours, our HF twin and transformers' model of the same dimensions."""
    from huggingface_version.convert import pytorch_to_hf
    from pytorch_version.families import model_for
    from utils.fast import SpeedUps

    torch.manual_seed(0)
    cfg = configs(kind, args)
    ours = SpeedUps().plug_in(model_for(cfg))
    if name == "ours":
        return ours
    if name == "ours_hf":
        return SpeedUps().plug_in(pytorch_to_hf(ours, attn_implementation="sdpa"))
    common = dict(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                  num_attention_heads=cfg.num_heads, intermediate_size=cfg.ffn_size, hidden_act="gelu",
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-5)  # fmt: skip
    if kind == "bert":
        from transformers import BertConfig, BertForMaskedLM

        config = BertConfig(vocab_size=VOCAB, max_position_embeddings=args.context, type_vocab_size=1,
                            pad_token_id=0, **common)  # fmt: skip
        config._attn_implementation = "sdpa"
        return BertForMaskedLM(config)
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=8, patch_size=2, num_channels=1, num_labels=10, **common)
    config._attn_implementation = "sdpa"
    return ViTForImageClassification(config)


def mlm_batch(seed: int, args):
    from utils.data.masking import Masker
    from utils.data.tokenizer import ENCODER_SPECIALS, CharTokenizer

    tokenizer = CharTokenizer("".join(chr(c) for c in range(40, 40 + VOCAB - 7)), ENCODER_SPECIALS)
    generator = torch.Generator().manual_seed(seed)
    windows = torch.randint(7, VOCAB, (args.batch, args.context - 2), generator=generator)
    return Masker(tokenizer)(windows, generator)


def training_step(kind: str, name: str, model, args):
    """One optimizer step, as each toolkit trains: ours through the trainer's labelled-logits step and
    loss, the others by a forward with labels."""
    from utils.fast import SpeedUps

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    speed = SpeedUps()
    step_logits, loss_sum = speed.labelled_logits(model, 0), speed.loss_sum()
    images = torch.rand(512, 1, 8, 8)

    def step(seed: int) -> None:
        if kind == "bert":
            batch = mlm_batch(seed, args)
            src, target = batch["src"], batch["tgt_out"]
        else:
            rows = torch.randint(0, 512, (args.vit_batch,), generator=torch.Generator().manual_seed(seed))
            src, target = images[rows], rows % 10
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):  # --bf16: every model alike
            if name == "ours":  # pytorch_version.train.train_one_epoch's computation
                labelled = model.labelled(target)
                logits = step_logits(src, src[:, :0].long() if kind == "bert" else src.new_zeros(0), labelled)
            elif kind == "bert":  # the Trainer's: -100 marks the positions without a label
                labels = torch.where(target == 0, -100, target)
                loss = model(input_ids=src, attention_mask=(src != 0).long(), labels=labels).loss
            else:
                loss = model(pixel_values=src, labels=target).loss
        if name == "ours":
            loss = loss_sum(logits.float(), target[labelled], 0.0) / labelled.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d_model", type=int, default=128)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--vit_d_model", type=int, default=128)
    parser.add_argument("--vit_batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="train every model under CPU bfloat16 autocast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(cpu_flags())
    result = {"args": vars(args), "cpu": cpu_flags()}
    for kind, reference, per_step in (
        ("bert", "bert", args.batch * args.context),
        ("vit", "vit", args.vit_batch),
    ):
        names = ("ours", "ours_hf", reference)
        models = {name: build(kind, name, args).train() for name in names}
        seconds = round_robin({n: training_step(kind, n, models[n], args) for n in names}, args.rounds, 4)
        unit = "tokens" if kind == "bert" else "images"
        row = {n: per_step / s for n, s in seconds.items()}
        result[f"{kind}_training_{unit}_per_s"] = row
        print(f"{kind} training, {unit}/s: ours {row['ours']:.0f}, ours_hf {row['ours_hf']:.0f}, "
              f"{reference} {row[reference]:.0f}; ours / {reference} {row['ours'] / row[reference]:.2f}x, "
              f"ours_hf / {reference} {row['ours_hf'] / row[reference]:.2f}x")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / f"encoder_speed{'_bf16' if args.bf16 else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
