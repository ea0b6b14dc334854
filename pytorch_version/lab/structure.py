"""The lab's experiments on what holds a deep stack together: residual connections, where the
LayerNorm sits, the initial weights, and stochastic depth. Each trains the bench's encoder-decoder,
six layers deep so that depth matters, once per setting, and measures the gradient that reaches
each layer and the loss it reaches.
"""

from __future__ import annotations

import torch
from torch import nn

from pytorch_version.lab.bench import Lab, Result, constant_after_warmup, curve, ratio
from utils.figures.lab_figures import Panel

DEEP = 6  # layers per stack: the paper's N
PEAK = 1e-3  # the bench's learning rate after warm-up


def bench_rate(lab: Lab):
    """The rate most experiments train at: a warm-up over the first fifth, then PEAK."""
    return constant_after_warmup(PEAK, max(lab.bench.steps // 5, 1))


def gradient_panel(title: str, norms: dict[str, dict[str, float]]) -> Panel:
    return Panel("bars", title, "layer (input side first)", "gradient L2 norm", norms, log=True)


def loss_panel(runs: dict) -> Panel:
    return Panel(
        "lines",
        "Training loss",
        "step",
        "cross-entropy (nats)",
        {label: curve(run.losses) for label, run in runs.items()},
    )


def residual_connections(lab: Lab) -> Result:
    runs = {
        name: lab.train(
            lab.config(num_layers=DEEP, residual=on), bench_rate(lab), grads_at=(0, lab.bench.steps - 1)
        )
        for name, on in (("with residuals", True), ("without", False))
    }
    last = lab.bench.steps - 1
    at_init = {name: run.gradient_norms[0] for name, run in runs.items()}
    trained = {name: run.gradient_norms[last] for name, run in runs.items()}
    first = "decoder.0"  # the output stack's first layer: farthest from the loss along the decoder
    on, off = at_init["with residuals"][first], at_init["without"][first]
    scores = {name: lab.evaluate(run) for name, run in runs.items()}
    losses = {name: run.final_loss() for name, run in runs.items()}
    times = (
        "while without them none reaches it (it underflows to 0 in float32)"
        if off == 0
        else f"{ratio(on, off):.3g}x the {off:.3g} it gets without them"
    )
    finding = (
        f"At initialisation the first decoder layer's gradient norm with residual connections is "
        f"{on:.3g}, {times}. After {lab.bench.steps} steps the training loss is "
        f"{losses['with residuals']:.3f} with residuals and {losses['without']:.3f} without; held-out "
        f"token accuracy {scores['with residuals']['token_accuracy']:.1%} against "
        f"{scores['without']['token_accuracy']:.1%}."
    )
    return Result(
        title="Residual connections on and off",
        checks="section 3.1 (residual connection around each sublayer); He et al. 2016",
        shows="how much gradient reaches each layer of a 6+6-layer post-LN model with and without the "
        "'x +' of Add & Norm, at initialisation and after training, and what each learns",
        numbers={
            "first_decoder_layer_ratio": ratio(on, off),
            "gradient_at_init": at_init,
            f"gradient_at_step_{last}": trained,
            "final_loss": losses,
            "held_out": scores,
        },
        finding=finding,
        panels=[
            gradient_panel("Gradient at initialisation", at_init),
            gradient_panel(f"Gradient at step {last}", trained),
            loss_panel(runs),
        ],
    )


def normalisation(lab: Lab) -> Result:
    warmup = max(lab.bench.steps // 4, 1)
    runs = {
        f"{'pre' if first else 'post'}-LN, {'warm-up' if w else 'no warm-up'}": lab.train(
            lab.config(num_layers=DEEP, norm_first=first), constant_after_warmup(3 * PEAK, w)
        )
        for first in (False, True)
        for w in (0, warmup)
    }
    losses = {name: run.final_loss() for name, run in runs.items()}
    at_init = {name.split(",")[0]: run.gradient_norms[0] for name, run in runs.items() if "no warm" in name}
    growth = {
        name: ratio(norms[f"decoder.{DEEP - 1}"], norms["decoder.0"]) for name, norms in at_init.items()
    }
    before, after = layer_norm_values(lab, runs["post-LN, warm-up"].model)
    post, pre = losses["post-LN, no warm-up"], losses["pre-LN, no warm-up"]
    steadier = "pre-LN" if pre < post else "post-LN"
    finding = (
        f"At peak rate {3 * PEAK:g} without warm-up, post-LN ends at training loss {post:.3f} and pre-LN "
        f"at {pre:.3f} ({steadier} trains better); with {warmup} warm-up steps post-LN reaches "
        f"{losses['post-LN, warm-up']:.3f} and pre-LN {losses['pre-LN, warm-up']:.3f}. At initialisation "
        f"post-LN's last decoder layer gets {growth['post-LN']:.3g}x the gradient of its first, pre-LN "
        f"{growth['pre-LN']:.3g}x. A LayerNorm turns inputs of std {before.std():.3g} into outputs of std "
        f"{after.std():.3g}."
    )
    return Result(
        title="Post-LN and pre-LN, with and without warm-up",
        checks="section 3.1 (LayerNorm(x + Sublayer(x))); Xiong et al. 2020, On Layer Normalization in "
        "the Transformer Architecture; Ba et al. 2016",
        shows="the gradient per layer at initialisation of the paper's post-LN and of pre-LN, the loss "
        "each reaches at a high learning rate with and without warm-up, and what a LayerNorm does to "
        "the distribution of the activations it normalises",
        numbers={
            "final_loss": losses,
            "gradient_at_init": at_init,
            "last_over_first_decoder_layer": growth,
            "layer_norm_std": {"before": before.std().item(), "after": after.std().item()},
            "layer_norm_mean": {"before": before.mean().item(), "after": after.mean().item()},
        },
        finding=finding,
        panels=[
            gradient_panel("Gradient at initialisation", at_init),
            loss_panel(runs),
            Panel(
                "hist",
                "A LayerNorm's input and output",
                "value",
                "density",
                {"before (encoder.0.norm1.in)": before, "after (norm1.out)": after},
            ),
        ],
    )


def layer_norm_values(lab: Lab, model) -> tuple[torch.Tensor, torch.Tensor]:
    """The first encoder LayerNorm's input and output on the held-out batch's real tokens."""
    batch = lab.held_out["transformer"]
    _, cache = model.run_with_cache(
        batch["src"], batch["tgt_in"], ["encoder.0.norm1.in", "encoder.0.norm1.out"]
    )
    real = batch["src"] != model.config.pad_id
    return cache["encoder.0.norm1.in"][real].flatten(), cache["encoder.0.norm1.out"][real].flatten()


def initialiser(scheme: str):
    """Re-initialise every matrix of a model by `scheme`; biases zero, LayerNorms as built."""
    fill = {
        "xavier": nn.init.xavier_uniform_,  # variance 2 / (fan_in + fan_out): the Annotated Transformer's
        "he": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),  # 2 / fan_in, for ReLU layers
        "normal 0.02": lambda w: nn.init.normal_(w, std=0.02),  # BERT's and GPT-2's
    }[scheme]

    def init(model: nn.Module) -> None:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    fill(module.weight)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)

    return init


SCHEMES = ("xavier", "he", "normal 0.02")


def initialisation(lab: Lab) -> Result:
    cfg = lab.config(num_layers=DEEP)
    runs = {s: lab.train(cfg, bench_rate(lab), init=initialiser(s)) for s in SCHEMES}
    weights = {s: matrices(lab.model(cfg, initialiser(s))) for s in SCHEMES}
    outputs = {s: sublayer_rms(lab, lab.model(cfg, initialiser(s))) for s in SCHEMES}
    losses = {s: run.final_loss() for s, run in runs.items()}
    scores = {s: lab.evaluate(run)["token_accuracy"] for s, run in runs.items()}
    best = min(losses, key=losses.get)
    stds = {s: w.std().item() for s, w in weights.items()}
    finding = (
        f"After {lab.bench.steps} steps {best} ends lowest: training loss "
        + ", ".join(f"{s} {losses[s]:.3f}" for s in SCHEMES)
        + "; held-out token accuracy "
        + ", ".join(f"{s} {scores[s]:.1%}" for s in SCHEMES)
        + ". The initial weights' std: "
        + ", ".join(f"{s} {stds[s]:.3g}" for s in SCHEMES)
        + "; the last encoder FFN's output RMS at initialisation: "
        + ", ".join(f"{s} {outputs[s][f'encoder.{DEEP - 1}']:.3g}" for s in SCHEMES)
        + "."
    )
    return Result(
        title="Initialisation: Xavier, He, N(0, 0.02)",
        checks="Glorot & Bengio 2010 (Xavier); He et al. 2015; Devlin et al. 2019 and Radford et al. 2019 "
        "(N(0, 0.02)); the paper does not say (the Annotated Transformer uses Xavier)",
        shows="the spread of the initial weights under each scheme, the size of each layer's FFN output "
        "at initialisation, and the loss each reaches from there",
        numbers={
            "final_loss": losses,
            "held_out_token_accuracy": scores,
            "weight_std": stds,
            "ffn_output_rms_at_init": outputs,
            "best": best,
        },
        finding=finding,
        panels=[
            Panel(
                "hist",
                "Initial weights (every matrix)",
                "weight",
                "density",
                {s: w[torch.randperm(w.numel())[:20000]] for s, w in weights.items()},
            ),
            Panel("bars", "FFN output RMS at initialisation", "layer", "RMS", outputs, log=True),
            loss_panel(runs),
        ],
    )


def matrices(model: nn.Module) -> torch.Tensor:
    """Every Linear weight of the layers, flattened into one vector."""
    return torch.cat(
        [
            m.weight.detach().flatten()
            for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and "layers" in n
        ]
    )


def sublayer_rms(lab: Lab, model) -> dict[str, float]:
    """The RMS of each layer's FFN output on the held-out batch (what each layer adds to the stream)."""
    batch = lab.held_out["transformer"]
    _, cache = model.run_with_cache(batch["src"], batch["tgt_in"], "*.ffn.out")
    keys = sorted(cache, key=lambda k: (not k.startswith("encoder"), int(k.split(".")[1])))
    return {k.removesuffix(".ffn.out"): cache[k].pow(2).mean().sqrt().item() for k in keys}


def stochastic_depth(lab: Lab, drop: float = 0.2) -> Result:
    runs = {
        f"layer drop {p:g}": lab.train(lab.config(num_layers=DEEP, layer_drop=p), bench_rate(lab))
        for p in (0.0, drop)
    }
    scores = {name: lab.evaluate(run) for name, run in runs.items()}
    losses = {name: run.final_loss() for name, run in runs.items()}
    off, on = (f"layer drop {p:g}" for p in (0.0, drop))
    gap = {name: scores[name]["nll"] - losses[name] for name in runs}
    finding = (
        f"Skipping each layer with probability {drop:g} in training: held-out token accuracy "
        f"{scores[on]['token_accuracy']:.1%} against {scores[off]['token_accuracy']:.1%} without, held-out "
        f"loss {scores[on]['nll']:.3f} against {scores[off]['nll']:.3f}; training loss {losses[on]:.3f} "
        f"against {losses[off]:.3f}."
    )
    return Result(
        title="Stochastic depth (layer drop) on and off",
        checks="Huang et al. 2016, Deep Networks with Stochastic Depth; Fan et al. 2019, LayerDrop",
        shows="what randomly skipping whole layers in training does to the training loss and to the "
        "held-out scores of the full model (every layer runs at evaluation)",
        numbers={"final_loss": losses, "held_out": scores, "held_out_minus_train_loss": gap},
        finding=finding,
        panels=[
            loss_panel(runs),
            Panel(
                "bars",
                "Held-out scores",
                "",
                "",
                {n: {k: s[k] for k in ("token_accuracy", "exact_match")} for n, s in scores.items()},
            ),
        ],
    )
