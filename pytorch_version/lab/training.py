"""The lab's experiments on what training is made of: the FFN's nonlinearity, the learning-rate
schedule, label smoothing, and the focal loss beside cross-entropy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pytorch_version.lab.bench import ECE_BINS, Lab, Result, curve
from pytorch_version.lab.structure import PEAK, bench_rate, loss_panel
from utils.figures.lab_figures import Panel
from utils.training.recipe import cosine_schedule

# the FFN variants at (nearly) equal parameter count: a gated FFN has three d_ff-wide matrices, so
# its d_ff is two thirds of the others' (Shazeer 2020)
FFN_VARIANTS = {
    "relu": {"activation": "relu"},
    "gelu": {"activation": "gelu"},
    "glu (gated gelu)": {"activation": "gelu", "ffn_gate": True},
}


def ffn_parameters(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if ".ffn." in n)


def dead_units(lab: Lab, model) -> float:
    """The share of FFN units whose activation is <= 0 on every real held-out token: they pass no
    signal forward (and, under ReLU, get no gradient)."""
    batch = lab.held_out["gpt"]
    _, cache = model.run_with_cache(batch["src"], batch["tgt_in"], "*.ffn.post_act")
    real = torch.cat([batch["src"], batch["tgt_in"]], dim=1) != model.config.pad_id
    dead = [(cache[k][real[:, -cache[k].size(1) :]] <= 0).all(dim=0).float().mean() for k in cache]
    return torch.stack(dead).mean().item()


def ffn_variants(lab: Lab) -> Result:
    width = lab.bench.ffn_size
    configs = {
        name: lab.config("gpt", ffn_size=width * 2 // 3 if "glu" in name else width, **switches)
        for name, switches in FFN_VARIANTS.items()
    }
    runs = {name: lab.train(cfg, bench_rate(lab)) for name, cfg in configs.items()}
    params = {name: ffn_parameters(run.model) for name, run in runs.items()}
    dead = {name: dead_units(lab, run.model) for name, run in runs.items()}
    scores = {name: lab.evaluate(run)["token_accuracy"] for name, run in runs.items()}
    losses = {name: run.final_loss() for name, run in runs.items()}
    best = min(losses, key=losses.get)
    finding = (
        "With FFN parameters " + ", ".join(f"{n} {params[n]:,}" for n in runs) + f", after {lab.bench.steps} "
        f"steps {best} ends lowest: training loss "
        + ", ".join(f"{n} {losses[n]:.3f}" for n in runs)
        + "; held-out token accuracy "
        + ", ".join(f"{n} {scores[n]:.1%}" for n in runs)
        + "; units never active on the held-out tokens "
        + ", ".join(f"{n} {dead[n]:.1%}" for n in runs)
        + "."
    )
    return Result(
        title="FFN variants: ReLU, GELU, gated (GLU)",
        checks="section 3.3 (FFN = max(0, x W1 + b1) W2 + b2); Hendrycks & Gimpel 2016 (GELU); Shazeer "
        "2020, GLU Variants Improve Transformer",
        shows="the three nonlinearities in the same decoder-only model at equal FFN parameter count: the "
        "loss each reaches and the share of FFN units that never fire",
        numbers={
            "ffn_parameters": params,
            "final_loss": losses,
            "held_out_token_accuracy": scores,
            "dead_unit_share": dead,
            "best": best,
        },
        finding=finding,
        panels=[
            loss_panel(runs),
            Panel(
                "bars",
                "Units never active (held-out)",
                "",
                "share",
                {n: {"dead units": v} for n, v in dead.items()},
            ),
        ],
    )


def schedules(steps: int, peak: float, d_model: int) -> dict[str, callable]:
    """Learning rate at step s (1 = the first update) of each schedule, all peaking at `peak`."""
    warm = max(steps // 10, 1)

    def noam(w: int):  # the paper's formula with its factor set so that the peak is `peak`
        return lambda s: peak * math.sqrt(w) * min(s**-0.5, s * w**-1.5)

    def one_cycle(s: int) -> float:  # torch's OneCycleLR: cosine up from peak / 25 for 30%, then down
        up = 0.3 * steps
        if s <= up:
            return peak / 25 + (peak - peak / 25) * (1 - math.cos(math.pi * s / up)) / 2
        return peak * 1e-4 + (peak - peak * 1e-4) * (1 + math.cos(math.pi * (s - up) / (steps - up))) / 2

    def cyclic(s: int) -> float:  # warm-up, then triangles between peak / 10 and peak
        if s < warm:
            return peak * s / warm
        period = max(steps // 4, 2)
        phase = ((s - warm) % period) / period
        return peak / 10 + (peak - peak / 10) * (1 - abs(2 * phase - 1))

    cosine = cosine_schedule(warm, steps)
    return {
        **{f"noam w={w}": noam(w) for w in (warm, steps // 4, steps // 2)},
        "linear": lambda s: peak * (s / warm if s < warm else max(0.0, (steps - s) / (steps - warm))),
        "cosine": lambda s: peak * cosine(s),
        "one-cycle": one_cycle,
        "cyclic": cyclic,
    }


def learning_rate_schedules(lab: Lab) -> Result:
    rates = schedules(lab.bench.steps, 2 * PEAK, lab.bench.hidden_size)
    cfg = lab.config()
    runs = {name: lab.train(cfg, rate) for name, rate in rates.items()}
    losses = {name: run.final_loss() for name, run in runs.items()}
    scores = {name: lab.evaluate(run)["token_accuracy"] for name, run in runs.items()}
    best = min(losses, key=losses.get)
    finding = (
        f"All peaking at {2 * PEAK:g} over {lab.bench.steps} steps, {best} trains best: training loss "
        + ", ".join(f"{n} {losses[n]:.3f}" for n in runs)
        + "; held-out token accuracy "
        + ", ".join(f"{n} {scores[n]:.1%}" for n in runs)
        + "."
    )
    return Result(
        title="Learning-rate schedules",
        checks="section 5.3 (warm-up, then 1/sqrt(step)); Loshchilov & Hutter 2017 (cosine); Smith 2017 "
        "(cyclic) and Smith & Topin 2019 (one-cycle)",
        shows="seven schedules with the same peak rate, the paper's Noam at three warm-ups among them, "
        "on the same model and batches: the rate at each step and the loss it gives",
        numbers={"final_loss": losses, "held_out_token_accuracy": scores, "best": best},
        finding=finding,
        panels=[
            Panel("lines", "Learning rate", "step", "rate", {n: curve(run.rates) for n, run in runs.items()}),
            loss_panel(runs),
        ],
    )


def reliability(lab: Lab, run) -> tuple[list[float], list[float]]:
    """Accuracy per confidence bin on the held-out tokens (a reliability diagram's points)."""
    batch = lab.held_out["transformer"]
    with torch.no_grad():
        probs = run.model(batch["src"], batch["tgt_in"]).float().softmax(-1)
    labelled = run.model.labelled(batch["tgt_out"])
    conf, guess = probs.max(-1)
    conf, hit = conf[labelled], (guess == batch["tgt_out"])[labelled].float()
    which = (conf * ECE_BINS).long().clamp(max=ECE_BINS - 1)
    centres = [(b + 0.5) / ECE_BINS for b in range(ECE_BINS) if (which == b).any()]
    accuracy = [hit[which == b].mean().item() for b in range(ECE_BINS) if (which == b).any()]
    return centres, accuracy


def label_smoothing(lab: Lab, epsilon: float = 0.1) -> Result:
    runs = {f"epsilon {e:g}": lab.train(lab.config(), bench_rate(lab), smoothing=e) for e in (0.0, epsilon)}
    scores = {name: lab.evaluate(run) for name, run in runs.items()}
    off, on = (f"epsilon {e:g}" for e in (0.0, epsilon))
    finding = (
        f"With label smoothing {epsilon:g} the held-out token accuracy is {scores[on]['token_accuracy']:.1%} "
        f"against {scores[off]['token_accuracy']:.1%} without, the mean confidence "
        f"{scores[on]['confidence']:.3f} against {scores[off]['confidence']:.3f}, the calibration error "
        f"(ECE) {scores[on]['ece']:.3f} against {scores[off]['ece']:.3f}, and the held-out loss "
        f"{scores[on]['nll']:.3f} against {scores[off]['nll']:.3f} nats per token."
    )
    diagram = {name: reliability(lab, run) for name, run in runs.items()}
    diagram["perfect calibration"] = ([0, 1], [0, 1])
    return Result(
        title="Label smoothing 0 and 0.1",
        checks="section 5.4 ('hurts perplexity ... but improves accuracy and BLEU'); Szegedy et al. 2016; "
        "Müller et al. 2019, When Does Label Smoothing Help?",
        shows="held-out accuracy, confidence and expected calibration error (ECE) of the same model "
        "trained with and without label smoothing",
        numbers={"held_out": scores},
        finding=finding,
        panels=[
            Panel("lines", "Reliability (held-out tokens)", "confidence", "accuracy", diagram),
            Panel(
                "bars",
                "Held-out scores",
                "",
                "",
                {n: {k: s[k] for k in ("token_accuracy", "confidence", "ece")} for n, s in scores.items()},
            ),
        ],
    )


def focal(gamma: float):
    """Focal loss (Lin et al. 2017): -(1 - p)^gamma log p, the mean over the labelled tokens; gamma 0 is
    cross-entropy. The weight (1 - p)^gamma shrinks the loss of tokens the model already gets right."""

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
        return (-((1 - log_p.exp()) ** gamma) * log_p).mean()

    return loss


GAMMAS = (0.0, 1.0, 2.0, 5.0)


def focal_loss(lab: Lab, gamma: float = 2.0) -> Result:
    p = torch.linspace(0.01, 0.99, 99)
    weights = {f"gamma {g:g}": (p.tolist(), ((1 - p) ** g).tolist()) for g in GAMMAS}
    values = {f"gamma {g:g}": (p.tolist(), (-((1 - p) ** g) * p.log()).tolist()) for g in GAMMAS}
    runs = {
        "cross-entropy": lab.train(lab.config(), bench_rate(lab)),
        f"focal gamma {gamma:g}": lab.train(lab.config(), bench_rate(lab), loss=focal(gamma)),
    }
    scores = {name: lab.evaluate(run) for name, run in runs.items()}
    ce, fl = scores["cross-entropy"], scores[f"focal gamma {gamma:g}"]
    easy = (1 - 0.9) ** gamma
    finding = (
        f"At gamma {gamma:g} a token predicted with p = 0.9 keeps {easy:.2%} of its cross-entropy weight. "
        f"Trained with it, held-out token accuracy is {fl['token_accuracy']:.1%} against "
        f"{ce['token_accuracy']:.1%} "
        f"with cross-entropy, mean confidence {fl['confidence']:.3f} against {ce['confidence']:.3f}, ECE "
        f"{fl['ece']:.3f} against {ce['ece']:.3f}."
    )
    return Result(
        title="Focal loss beside cross-entropy",
        checks="Lin et al. 2017, Focal Loss for Dense Object Detection; Mukhoti et al. 2020 (calibration)",
        shows="the weight (1 - p)^gamma the focal loss puts on each token against its probability p, and "
        "a model trained with it next to one trained with cross-entropy",
        numbers={"held_out": scores, "weight_at_p_0.9": easy},
        finding=finding,
        panels=[
            Panel("lines", "Weight (1 - p)^gamma", "p of the true token", "weight", weights),
            Panel("lines", "Loss -(1 - p)^gamma log p", "p of the true token", "loss", values, log=True),
            loss_panel(runs),
        ],
    )
