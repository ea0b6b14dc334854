"""What the --debug traces of the one-stack families share: a layer's LayerNorm and residual steps.

A decoder-only (trace_decoder_only.py) and an encoder-only (trace_encoder_only.py) model each have a
single stack, `decoder.*` or `encoder.*`, pre-LN or post-LN. Pre-LN leaves the residual stream
un-normalised: each sublayer reads LayerNorm(x) and adds its output to x, and a last LayerNorm
(`{stack}.norm`) closes the stack; post-LN is the paper's Add & Norm after each sublayer.
"""

from __future__ import annotations

from utils.observe.trace_printer import TracePrinter


class OneStackTracePrinter(TracePrinter):
    stack_name = "decoder"  # the cache's prefix of the one stack

    def pre_ln(self) -> bool:
        """Pre-LN leaves the residual stream un-normalised, so a last LayerNorm closes the stack."""
        return self.get(f"{self.stack_name}.norm.out") is not None

    def norm(self, layer: str, norm: str, title: str) -> None:
        if self.pre_ln():  # the sublayer reads LayerNorm(x) and adds its output to x
            self.say(f"> LayerNorm before the {title} (pre-LN: the residual stream stays unnormalised)", 1)
            self.value("LayerNorm input", f"{layer}.{norm}.in", 2)
            self.value("LayerNorm output", f"{layer}.{norm}.out", 2)

    def residual(
        self, layer: str, norm: str, title: str, stream: str, label: str = "residual stream"
    ) -> None:
        if self.pre_ln():
            self.say(f"> Add: x + {title}(LayerNorm(x))", 1)
            self.value(label, f"{layer}.{stream}", 2)
        else:
            self.add_norm(layer, norm, title)
