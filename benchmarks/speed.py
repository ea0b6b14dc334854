"""Speed and memory side by side with the peers, measured in one run on this machine.

    python benchmarks/speed.py                 # training, decoding, tracing cost, memory
    python benchmarks/speed.py --wall_times    # + wall time of `main.py --version both` and of the tests

Same dimensions for every model: d_model 256, 3+3 layers, 8 heads, FFN 512, vocab 8000,
batch 64, source/target lengths up to 24 with padding masks, dropout 0.1, fixed threads
and seeds, warm-up steps, median of repeats. Each training measurement runs in its own
process, so its peak resident memory is its own. Each model trains as its toolkit does
(speed_models.training_loss): ours and its HF version compute logits only where there is a
label and use the loss's written-down gradient, the peers compute logits at every position
and let F.cross_entropy ignore the padding; every model gets the same
fused Adam (transformers' Trainer defaults to fused AdamW too). Ratios (ours / peer) are
the headline: absolute numbers depend on the machine. Writes benchmarks/results/speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.speed_models import (  # noqa: E402
    BATCH,
    BUILDERS,
    LEN,
    PAD,
    VOCAB,
    bart,
    hf_ours,
    make_batch,
    ours,
    strip_capture_points,
    training_loss,
)


def measure_training(name: str, steps: int, repeats: int) -> dict:
    """Forward + backward + Adam step; padded target tokens per second (median of repeats)."""
    torch.manual_seed(0)
    model = BUILDERS[name]().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)  # as our trainers and HF's default
    batches = [make_batch(i) for i in range(steps)]

    def step(src, tgt_in, tgt_out):
        loss = training_loss(name, model, src, tgt_in, tgt_out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in batches[:3]:  # warm-up
        step(*b)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            step(*b)
        rates.append(steps * BATCH * LEN / (time.perf_counter() - start))
    return {"tokens_per_s": statistics.median(rates),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def in_subprocess(kind: str, name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--_child", kind, name, "--steps", str(args.steps),
           "--repeats", str(args.repeats), "--threads", str(args.threads)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_decoding(repeats: int) -> dict:
    """Tokens/s for 64 sources and exactly 32 new tokens (EOS never ends a row early), greedy and beam 4."""
    import dataclasses

    from pytorch_version.decoding import beam_search, greedy_decode

    torch.manual_seed(0)
    model = ours().eval()
    model.config = dataclasses.replace(model.config)
    model.config.eos_id = VOCAB + 1  # an id never produced (set past ModelConfig's check on purpose)
    hf, peer = hf_ours().eval(), bart().eval()
    src, _, _ = make_batch(99)
    mask = (src != PAD).long()
    new = 32
    beam4 = dict(input_ids=src, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, num_beams=4,
                 do_sample=False)  # fmt: skip
    runs = {
        "ours greedy (KV cache)": lambda: greedy_decode(model, src, new),
        "ours greedy (no cache: naive re-decode)": lambda: greedy_decode(model, src, new, use_cache=False),
        "ours (HF) generate": lambda: hf.generate(input_ids=src, attention_mask=mask, max_new_tokens=new,
                                                  min_new_tokens=new, do_sample=False),
        "Bart generate": lambda: peer.generate(input_ids=src, attention_mask=mask, max_new_tokens=new,
                                               min_new_tokens=new, num_beams=1, do_sample=False),
        "ours beam 4 (KV cache)": lambda: beam_search(model, src, 4, new),
        "ours (HF) generate beam 4": lambda: hf.generate(**beam4),
        "Bart generate beam 4": lambda: peer.generate(**beam4),
    }  # fmt: skip
    times = {label: [] for label in runs}
    with torch.no_grad():
        for fn in runs.values():
            fn()  # warm-up
        # round-robin, at least 5 rounds: a slow moment of the machine hits every run alike
        for _ in range(max(repeats, 5)):
            for label, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - start)
    return {label: BATCH * new / statistics.median(t) for label, t in times.items()}


def measure_tracing(repeats: int) -> dict:
    """Inference forward cost: no capture points, tracing off, weights only, full cache."""
    from utils.observe.tracing import capture

    torch.manual_seed(0)
    traced = ours().eval()
    bare = strip_capture_points(ours().eval())
    bare.load_state_dict(traced.state_dict())
    src, tgt, _ = make_batch(7)

    def with_cache(names):
        def run():
            with capture(traced, names):
                traced(src, tgt)

        return run

    runs = {
        "bare": lambda: bare(src, tgt),
        "tracing off": lambda: traced(src, tgt),
        "weights": with_cache("*.weights"),
        "full": with_cache(None),
    }
    samples = {name: [] for name in runs}
    with torch.no_grad():
        for fn in runs.values():
            for _ in range(3):
                fn()
        for _ in range(repeats):  # the variants take turns, so a slow spell of the machine hits them all
            for name, fn in runs.items():
                start = time.perf_counter()
                for _ in range(5):
                    fn()
                samples[name].append((time.perf_counter() - start) / 5)
    # per round, each variant over the bare model of the same round: the median of those ratios
    ratio = {name: statistics.median(t / b for t, b in zip(samples[name], samples["bare"])) for name in runs}
    result = {
        "no capture points (ms)": statistics.median(samples["bare"]) * 1e3,
        "tracing off / no capture points": ratio["tracing off"],
        "attention weights only / no capture points": ratio["weights"],
        "full cache / no capture points": ratio["full"],
    }
    with torch.no_grad(), capture(traced) as cache:
        traced(src, tgt)
    result["full cache size (MB)"] = sum(v.nbytes for v in cache.values()) / 2**20
    return result


def wall_time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--wall_times", action="store_true", help="also time main.py --version both and pytest"
    )
    parser.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args._child:
        print(json.dumps(measure_training(args._child[1], args.steps, args.repeats)))
        return

    train = {name: in_subprocess("train", name, args) for name in BUILDERS}
    report = {"threads": args.threads, "training": train}
    ours_rate = train["ours"]["tokens_per_s"]
    print(f"\nTraining (target tokens/s, batch {BATCH} x {LEN}, median of {args.repeats}), peak RSS")
    for name, r in train.items():
        ratio = ours_rate / r["tokens_per_s"]
        print(
            f"  {name:22} {r['tokens_per_s']:9.0f} tok/s  {r['peak_rss_mb']:6.0f} MB   ours/this {ratio:.2f}x"
        )
    report["decoding"] = decoding = measure_decoding(args.repeats)
    print("\nGreedy decoding, 64 sources x 32 new tokens (tokens/s)")
    for label, rate in decoding.items():
        print(f"  {label:42} {rate:9.0f}")
    cached = decoding["ours greedy (KV cache)"]
    print(f"  ours cached / Bart generate: {cached / decoding['Bart generate']:.2f}x, "
          f"/ naive loop: {cached / decoding['ours greedy (no cache: naive re-decode)']:.2f}x")  # fmt: skip
    print(f"  ours beam 4 / Bart generate beam 4: "
          f"{decoding['ours beam 4 (KV cache)'] / decoding['Bart generate beam 4']:.2f}x")  # fmt: skip
    report["tracing"] = tracing = measure_tracing(args.repeats * 3)
    print("\nForward cost (inference, one batch)")
    for label, value in tracing.items():
        print(f"  {label:45} {value:.3f}")
    if args.wall_times:
        with_env = [
            sys.executable,
            "main.py",
            "--version",
            "both",
            "--quiet",
            "--output_dir",
            "/tmp/speed_both",
        ]
        report["wall_time_both_s"] = wall_time(with_env)
        report["wall_time_tests_s"] = wall_time([sys.executable, "-m", "pytest", "-q", "tests"])
        print(f"\nmain.py --version both: {report['wall_time_both_s']:.0f}s; "
              f"test suite: {report['wall_time_tests_s']:.0f}s")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten {out.relative_to(ROOT)}; machine: {os.cpu_count()} cores, torch {torch.__version__}")


if __name__ == "__main__":
    main()
