"""The lab's experiments on what the attention sees: the 1/sqrt(d_k) scaling of its scores, the
position information (the sinusoidal table, and rotary against learned against sinusoidal in a GPT),
and what the token embeddings learn.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pytorch_version.lab.bench import Lab, Result, curve
from pytorch_version.lab.structure import bench_rate, loss_panel
from utils.figures.lab_figures import Panel
from utils.figures.paper import sinusoidal_encoding

HEAD_WIDTHS = (4, 8, 16, 32, 64, 128, 256, 512)
KEYS = 32  # keys each query attends over
SATURATED = 0.9  # a softmax row is saturated when one key takes more than this share


def softmax_statistics(d_k: int, scaled: bool, queries: int = 512, seed: int = 0) -> dict[str, float]:
    """Softmax over q.k scores of random q and k whose components have mean 0 and variance 1, the
    paper's footnote 4 assumption (then q.k has variance d_k): the entropy as a share of its maximum
    log(KEYS), the share of saturated rows, and the softmax's mean gradient size sum_i p_i (1 - p_i)
    (the trace of its Jacobian: near 0 when one key takes everything)."""
    g = torch.Generator().manual_seed(seed + d_k)
    q, k = torch.randn(queries, d_k, generator=g), torch.randn(KEYS, d_k, generator=g)
    scores = q @ k.T / (math.sqrt(d_k) if scaled else 1.0)
    p = scores.softmax(-1)
    entropy = -(p * p.clamp_min(1e-30).log()).sum(-1) / math.log(KEYS)
    return {
        "entropy": entropy.mean().item(),
        "saturated": (p.max(-1).values > SATURATED).float().mean().item(),
        "gradient": (p * (1 - p)).sum(-1).mean().item(),
        "score_std": scores.std().item(),
    }


def attention_scaling(lab: Lab) -> Result:
    table = {
        ("scaled" if s else "unscaled"): {d: softmax_statistics(d, s) for d in HEAD_WIDTHS}
        for s in (True, False)
    }
    series = lambda key: {
        name: (list(HEAD_WIDTHS), [row[d][key] for d in HEAD_WIDTHS]) for name, row in table.items()
    }
    lo, hi = HEAD_WIDTHS[0], HEAD_WIDTHS[-1]
    un, sc = table["unscaled"], table["scaled"]
    finding = (
        f"Without the scaling the softmax entropy falls from {un[lo]['entropy']:.1%} of its maximum at "
        f"d_k={lo} to {un[hi]['entropy']:.1%} at d_k={hi}, and {un[hi]['saturated']:.0%} of the rows are "
        f"saturated (one key above {SATURATED:.0%}); with 1/sqrt(d_k) it stays between "
        f"{min(sc[d]['entropy'] for d in HEAD_WIDTHS):.1%} and "
        f"{max(sc[d]['entropy'] for d in HEAD_WIDTHS):.1%}. The softmax's gradient size at d_k={hi}: "
        f"{un[hi]['gradient']:.3g} unscaled, {sc[hi]['gradient']:.3g} "
        f"scaled."
    )
    return Result(
        title="The 1/sqrt(d_k) scaling of the attention scores",
        checks="section 3.2.1 and its footnote 4 (q.k has variance d_k for unit-variance components)",
        shows=f"softmax entropy, saturation and gradient size over {KEYS} keys against the head width "
        "d_k, with and without dividing the scores by sqrt(d_k)",
        numbers={name: {str(d): v for d, v in row.items()} for name, row in table.items()},
        finding=finding,
        panels=[
            Panel("lines", "Softmax entropy / log(keys)", "d_k", "share of the maximum", series("entropy")),
            Panel("lines", f"Rows with one key above {SATURATED:.0%}", "d_k", "share", series("saturated")),
            Panel("lines", "Softmax gradient size", "d_k", "sum p (1 - p)", series("gradient"), log=True),
        ],
    )


def relative_dot_products(pe: np.ndarray, max_offset: int) -> tuple[np.ndarray, np.ndarray]:
    """PE(p) . PE(p + k) for each offset k: its mean over the positions p and its spread (std) across
    them. A spread of 0 says the dot product depends on the distance k alone."""
    dots = pe @ pe.T
    n = len(pe)
    means, spreads = [], []
    for k in range(max_offset + 1):
        values = np.array([dots[p, p + k] for p in range(n - k)])
        means.append(values.mean())
        spreads.append(values.std())
    return np.array(means), np.array(spreads)


POSITIONS = ("rotary", "learned", "sinusoidal")


def positions(lab: Lab) -> Result:
    d = lab.bench.hidden_size
    pe = sinusoidal_encoding(64, d)
    means, spreads = relative_dot_products(pe, 32)
    runs = {p: lab.train(lab.config("gpt", positions=p), bench_rate(lab)) for p in POSITIONS}
    scores = {p: lab.evaluate(run) for p, run in runs.items()}
    best = max(scores, key=lambda p: scores[p]["token_accuracy"])
    token_norm, table_norm = signal_sizes(lab.model(lab.config("gpt", positions="sinusoidal")))
    finding = (
        f"Across positions, PE(p) . PE(p + k) varies by at most {spreads.max():.2g} (std) for any offset "
        f"k <= 32, against a mean that falls from {means[0]:.3g} at k = 0 to {means[-1]:.3g} at k = 32: the "
        f"table's dot products depend on the distance alone. In a {lab.bench.num_layers}-layer GPT on "
        f"{lab.bench.task} after {lab.bench.steps} steps, held-out token accuracy is "
        + ", ".join(f"{p} {scores[p]['token_accuracy']:.1%}" for p in POSITIONS)
        + f" ({best} best); exact match "
        + ", ".join(f"{p} {scores[p]['exact_match']:.1%}" for p in POSITIONS)
        + ". At initialisation the GPT's token vectors (N(0, 0.02), not scaled by sqrt(d), as GPT-2's) have "
        f"norm {token_norm:.3g} against {table_norm:.3g} for the sinusoidal table's rows it is added to; the "
        "paper multiplies its embeddings by sqrt(d_model) (section 3.4)."
    )
    return Result(
        title="Position information",
        checks="section 3.5 (sinusoidal positions, 'attend by relative positions'); Su et al. 2021 "
        "(rotary); Radford et al. 2019 (learned)",
        shows="the sinusoidal table, how its dot products depend on the distance between positions, and "
        "the three kinds of position information trained in the same decoder-only model on the same task",
        numbers={
            "relative_dot_mean": means.tolist(),
            "relative_dot_spread_max": float(spreads.max()),
            "held_out": scores,
            "gpt_token_norm": token_norm,
            "sinusoidal_row_norm": table_norm,
            "final_loss": {p: run.final_loss() for p, run in runs.items()},
            "best": best,
        },
        finding=finding,
        panels=[
            Panel("matrix", "Sinusoidal table PE(position, dimension)", "dimension", "position", matrix=pe),
            Panel(
                "lines",
                "PE(p) . PE(p + k)",
                "offset k",
                "dot product",
                {
                    "mean over p": (list(range(33)), means.tolist()),
                    "spread across p (std)": (list(range(33)), spreads.tolist()),
                },
            ),
            loss_panel(runs),
        ],
    )


def signal_sizes(gpt) -> tuple[float, float]:
    """The mean norm of a GPT's token vectors as they enter the stack, and of the position rows added."""
    tokens = gpt.tgt_embed.embedding.weight.detach() * gpt.tgt_embed.scale
    return tokens.norm(dim=-1).mean().item(), gpt.positions.table.norm(dim=-1).mean().item()


SPECIAL = 4  # ids 0..3: <pad> <s> </s> <unk> (utils.data.tokenizer.SPECIALS)


def embedding_geometry(weight: torch.Tensor) -> dict[str, float]:
    """Norms of the special tokens' rows and of the characters', and the mean cosine similarity between
    two characters and between a special token and a character."""
    unit = F.normalize(weight, dim=-1)
    cos = unit @ unit.T
    chars = cos[SPECIAL:, SPECIAL:]
    n = chars.size(0)
    return {
        "special_norm": weight[:SPECIAL].norm(dim=-1).mean().item(),
        "character_norm": weight[SPECIAL:].norm(dim=-1).mean().item(),
        "character_cosine": ((chars.sum() - n) / (n * (n - 1))).item(),
        "special_character_cosine": cos[:SPECIAL, SPECIAL:].mean().item(),
    }


def embeddings(lab: Lab) -> Result:
    cfg = lab.config()
    fresh = lab.model(cfg).tgt_embed.embedding.weight.detach().clone()
    run = lab.train(cfg, bench_rate(lab))
    trained = run.model.tgt_embed.embedding.weight.detach()
    before, after = embedding_geometry(fresh), embedding_geometry(trained)
    finding = (
        f"After {lab.bench.steps} steps the target embedding (tied to the output layer) gives the special "
        f"tokens a mean norm of {after['special_norm']:.3g} against {after['character_norm']:.3g} for the "
        f"characters (at initialisation {before['special_norm']:.3g} and {before['character_norm']:.3g}); "
        "two "
        f"characters' mean cosine similarity went from {before['character_cosine']:.3f} to "
        f"{after['character_cosine']:.3f}, a special token's to a character from "
        f"{before['special_character_cosine']:.3f} to {after['special_character_cosine']:.3f}."
    )
    tokens = [lab.tokenizer.tokens([i])[0] for i in range(trained.size(0))]
    unit = F.normalize(trained, dim=-1)
    return Result(
        title="What the token embeddings learn",
        checks="section 3.4 (embeddings shared with the pre-softmax linear); Press & Wolf 2017",
        shows="the norms of the target embedding's rows and their cosine similarities, special tokens "
        "against characters, at initialisation and after training",
        numbers={"at_init": before, "trained": after, "tokens": tokens},
        finding=finding,
        panels=[
            Panel(
                "hist",
                "Row norms",
                "L2 norm",
                "density",
                {"at initialisation": fresh.norm(dim=-1), "trained": trained.norm(dim=-1)},
            ),
            Panel(
                "matrix",
                "Cosine similarity (trained; ids 0-3 special)",
                "token id",
                "token id",
                matrix=(unit @ unit.T).numpy(),
            ),
            Panel("lines", "Training loss", "step", "nats", {"baseline": curve(run.losses)}),
        ],
    )
