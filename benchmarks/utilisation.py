"""FLOP utilisation: how much of this CPU's matmul peak each family's training and decoding reach.

    python benchmarks/utilisation.py [--rounds 5] [--threads 2] [--bf16]

1. The peak: a 2048 x 2048 by 2048 x 2048 matmul, 2 * 2048^3 FLOPs, timed in float32 and in bfloat16
   (median of --rounds); where the CPU has bf16 units (the avx512_bf16 or amx_bf16 flag) the bfloat16
   peak is the reference for --bf16 runs.
2. The work: one training step (forward, loss, backward, fused AdamW, clipping) of each family as the
   toolkit trains it, with its speed-ups (benchmarks/speed_models.py, gpt_speed.py, encoder_speed.py build
   them at the speed benchmarks' shapes), and greedy decoding with the KV cache for the two decoders.
   Its FLOPs are counted from the operand shapes by torch.utils.flop_counter.FlopCounterMode while
   it runs once: 2*m*n*k for an (m x k) @ (k x n) product, the attention's two products likewise, the
   backward pass's two products per forward one; element-wise work is not counted, as in nanoGPT's
   estimate_mfu. For a GPT that count is nanoGPT's formula, per token 6*N + 12*L*d*T (N the
   parameters in matrices, L layers, d the width, T the context), which is printed beside it as a
   check. Ours computes the output layer at labelled positions only, so its count is the work done.
3. Utilisation = FLOPs / the step's median time / the peak of its dtype.

Prints the CPU's flags; writes benchmarks/results/utilisation.json.
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
from torch.utils import flop_counter  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.speed_pieces import cpu_flags  # noqa: E402


def peak(dtype: torch.dtype, rounds: int, n: int = 2048) -> float:
    """FLOP/s of one n x n matmul in `dtype`, the median of `rounds` after a warm-up."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


# torch counts the attention kernels of the GPU but not the CPU's fused one: the same products, by the
# same formulas (the two of the forward, the five of the backward; a causal mask counts in full)
def _attention(q, k, v, *args, out_shape=None, **kwargs) -> int:  # shapes, as FlopCounterMode passes them
    return flop_counter.sdpa_flop_count(q, k, v)


def _attention_backward(grad, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad, q, k, v)


_CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward,
}


def counted(run) -> int:
    """The FLOPs of one call of `run`, from the shapes of the products it computes."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        run()
    return counter.get_total_flops()


def timed(run, rounds: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gpt_formula(model, batch: int, context: int) -> int:
    """nanoGPT's estimate: per token 6*N + 12*L*d*T, N the parameters in matrices (embeddings excluded,
    the tied output layer counted once), times the tokens of the batch."""
    cfg = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embed" not in name)
    n += cfg.hidden_size * cfg.tgt_vocab_size  # the output layer, tied to the embedding
    return (6 * n + 12 * cfg.num_layers * cfg.hidden_size * context) * batch * context


def workloads(args) -> dict:
    """name -> (the call to measure, its tokens, a formula's count or None)."""
    from benchmarks import encoder_speed, gpt_speed, speed_models
    from pytorch_version.decoding import greedy_decode
    from pytorch_version.sampling import sample_batch

    torch.manual_seed(0)
    loads = {}
    ours = speed_models.ours(dropout=0.0)
    src, tgt_in, tgt_out = speed_models.make_batch(0)
    opt = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)

    def transformer_step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = speed_models.training_loss("ours", ours, src, tgt_in, tgt_out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ours.parameters(), 1.0)
        opt.step()

    loads["transformer training"] = (transformer_step, int((tgt_out != 0).sum()), None)

    @torch.no_grad()
    def transformer_greedy():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            greedy_decode(ours.eval(), src, 24)

    loads["transformer greedy decoding"] = (transformer_greedy, src.size(0) * 24, None)
    gpt_args = argparse.Namespace(d_model=256, layers=4, heads=8, context=128, batch=32, bf16=args.bf16)
    gpt = gpt_speed.build("ours", gpt_args)
    step = gpt_speed.training_step("ours", gpt, gpt_args)
    loads["gpt training"] = (lambda: step(0), gpt_args.batch * gpt_args.context,
                             gpt_formula(gpt, gpt_args.batch, gpt_args.context))  # fmt: skip
    prompts = torch.randint(4, gpt_speed.VOCAB, (8, 16), generator=torch.Generator().manual_seed(0)).tolist()

    @torch.no_grad()
    def gpt_greedy():  # 100 new tokens for each of 8 prompts, as --prompt writes them
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            sample_batch(gpt.eval(), prompts, 100, do_sample=False)

    loads["gpt greedy decoding"] = (gpt_greedy, 8 * 100, None)
    enc_args = argparse.Namespace(d_model=128, vit_d_model=128, layers=2, heads=4, context=64, batch=64,
                                  vit_batch=32, bf16=args.bf16)  # fmt: skip
    for kind in ("bert", "vit"):
        model = encoder_speed.build(kind, "ours", enc_args)
        run = encoder_speed.training_step(kind, "ours", model, enc_args)
        tokens = enc_args.batch * enc_args.context if kind == "bert" else enc_args.vit_batch * 17
        loads[f"{kind} training"] = (lambda run=run: run(0), tokens, None)
    return loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="every workload under CPU bfloat16 autocast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flags = cpu_flags()
    peaks = {"float32": peak(torch.float32, args.rounds), "bfloat16": peak(torch.bfloat16, args.rounds)}
    reference = "bfloat16" if args.bf16 else "float32"
    print(f"CPU flags: {flags}; {args.threads} threads; torch {torch.__version__}")
    print(f"matmul peak (2048^3): float32 {peaks['float32'] / 1e9:.0f} GFLOP/s, "
          f"bfloat16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s; reference: {reference}")  # fmt: skip
    rows = []
    for name, (run, tokens, formula) in workloads(args).items():
        flops = counted(run)
        seconds = timed(run, args.rounds)
        rows.append({"workload": name, "flops": flops, "formula_flops": formula, "seconds": seconds,
                     "tokens_per_s": tokens / seconds, "gflops_per_s": flops / seconds / 1e9,
                     "utilisation": flops / seconds / peaks[reference]})  # fmt: skip
    print(f"\n| workload | GFLOP counted | (formula) | ms | tokens/s | GFLOP/s | of the {reference} peak |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        formula = f"{r['formula_flops'] / 1e9:.2f}" if r["formula_flops"] else ""
        print(f"| {r['workload']} | {r['flops'] / 1e9:.2f} | {formula} | {r['seconds'] * 1e3:.1f} | "
              f"{r['tokens_per_s']:,.0f} | {r['gflops_per_s']:.1f} | {r['utilisation']:.1%} |")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / f"utilisation{'_bf16' if args.bf16 else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu_flags": flags, "threads": args.threads, "peaks": peaks, "rows": rows},
                              indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
