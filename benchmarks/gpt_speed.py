"""The GPT's speed side by side with transformers' GPT2LMHeadModel of the same dimensions, in one run.

    python benchmarks/gpt_speed.py [--layers 4 --d_model 192 --context 128 --batch 32] [--rounds 5]

Training: tokens per second of a full optimizer step (forward, loss, backward, fused AdamW, gradient
clipping) of
    ours      pytorch_version's GPT with the toolkit's speed-ups, its loss as the trainer computes it
    ours_hf   huggingface_version's TutorialGPTForCausalLM (the Trainer's computation: forward with
              labels, transformers' shifted cross-entropy)
    gpt2      transformers' GPT2LMHeadModel (learned positions, GELU, pre-LN), forward with labels
on random windows of a 69-token vocabulary (tinyshakespeare's 65 characters + 4 specials).
Sampling: new tokens per second of KV-cached sampling (temperature 0.8, top-k 50) from a 16-token
prompt, batch 1 (what `main.py --prompt` does) and batch 8: ours (pytorch_version.sampling.sample_batch),
ours_hf and gpt2 (`generate(do_sample=True)`). Rounds alternate the models, medians are reported;
ratios ours / gpt2 are the headline. Prints the CPU's flags; writes benchmarks/results/gpt_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.speed_pieces import cpu_flags  # noqa: E402

VOCAB = 69


def build(name: str, args):
    """The three models, the same dimensions; ours with the speed-ups the toolkit plugs in."""
    from utils.fast import SpeedUps
    from utils.runtime.config import ModelConfig

    torch.manual_seed(0)
    shape = dict(hidden_size=args.d_model, num_layers=args.layers, num_heads=args.heads,
                 ffn_size=4 * args.d_model, dropout=0.0, max_position=args.context)  # fmt: skip
    if name == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=VOCAB, n_positions=args.context, n_embd=args.d_model,
                            n_layer=args.layers, n_head=args.heads, resid_pdrop=0.0, embd_pdrop=0.0,
                            attn_pdrop=0.0, bos_token_id=1, eos_token_id=2)  # fmt: skip
        config._attn_implementation = "sdpa"
        return GPT2LMHeadModel(config)
    cfg = ModelConfig(arch="gpt", positions="rotary", activation="gelu", init="gpt2", norm_first=True,
                      src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, **shape)  # fmt: skip
    if name == "ours":
        from pytorch_version.families import model_for

        return SpeedUps().plug_in(model_for(cfg))
    from huggingface_version.convert import hf_config_of
    from huggingface_version.modeling_gpt import TutorialGPTForCausalLM

    return SpeedUps().plug_in(TutorialGPTForCausalLM(hf_config_of(cfg)))


def training_step(name: str, model, args):
    """One optimizer step on a fresh batch of random windows, as each toolkit trains."""
    from utils.fast import SpeedUps

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    speed = SpeedUps()
    labelled_logits = speed.labelled_logits(model, 0) if name == "ours" else None
    loss_sum = speed.loss_sum()

    def step(seed: int) -> None:
        windows = torch.randint(
            4, VOCAB, (args.batch, args.context + 1), generator=torch.Generator().manual_seed(seed)
        )
        x, y = windows[:, :-1], windows[:, 1:]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):  # --bf16: every model alike
            if name == "ours":  # pytorch_version.train.train_one_epoch's computation
                labelled = torch.ones_like(x, dtype=torch.bool)
                logits = labelled_logits(x[:, :0], x, labelled)
            else:  # the Trainer's: labels are the inputs, the model shifts them
                loss = model(input_ids=windows[:, :-1], labels=windows[:, :-1]).loss
        if name == "ours":
            loss = loss_sum(logits.float(), y[labelled], 0.0) / labelled.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def sampling_run(name: str, model, batch: int, new_tokens: int):
    prompt = torch.randint(4, VOCAB, (batch, 16), generator=torch.Generator().manual_seed(1))

    def run(seed: int) -> None:
        with torch.no_grad():
            if name == "ours":
                from pytorch_version.sampling import sample_batch

                sample_batch(model, prompt.tolist(), new_tokens, True, 0.8, 50, 1.0, seed=seed)
            else:
                torch.manual_seed(seed)
                mask = torch.ones_like(prompt)
                model.generate(prompt, attention_mask=mask, do_sample=True, temperature=0.8, top_k=50,
                               max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0,
                               eos_token_id=None)  # fmt: skip

    return run


def round_robin(runs: dict, rounds: int, calls: int) -> dict[str, float]:
    """Seconds per call, median over rounds; each round times every model once, in turn."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up
        run(0)
    for r in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for c in range(calls):
                run(1000 * r + c)
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d_model", type=int, default=192)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new_tokens", type=int, default=100)
    parser.add_argument("--bf16", action="store_true", help="train every model under CPU bfloat16 autocast")
    parser.add_argument("--no_sampling", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(cpu_flags())
    names = ("ours", "ours_hf", "gpt2")
    models = {name: build(name, args) for name in names}
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    print(f"parameters: {params}")
    train = round_robin({n: training_step(n, models[n].train(), args) for n in names}, args.rounds, 4)
    tokens = args.batch * args.context
    result = {"args": vars(args), "parameters": params, "cpu": cpu_flags(),
              "training_tokens_per_s": {n: tokens / s for n, s in train.items()}}  # fmt: skip
    for batch in () if args.no_sampling else (1, 8):
        runs = {n: sampling_run(n, models[n].eval(), batch, args.new_tokens) for n in names}
        seconds = round_robin(runs, args.rounds, 1)
        result[f"sampling_batch{batch}_tokens_per_s"] = {
            n: batch * args.new_tokens / s for n, s in seconds.items()
        }
    print(f"\n{'measurement':28} {'ours':>9} {'ours_hf':>9} {'gpt2':>9} {'ours/gpt2':>10} {'hf/gpt2':>8}")
    for key in [k for k in result if k.endswith("tokens_per_s")]:
        row = result[key]
        print(f"{key:28} {row['ours']:9.0f} {row['ours_hf']:9.0f} {row['gpt2']:9.0f} "
              f"{row['ours'] / row['gpt2']:9.2f}x {row['ours_hf'] / row['gpt2']:7.2f}x")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / f"gpt_speed{'_bf16' if args.bf16 else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
