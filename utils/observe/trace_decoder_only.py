"""The `--debug` trace of a decoder-only model (GPT): one stack over the prompt and the completion.

A decoder-only cache (utils.observe.family) has `tgt_embed`, `tgt_pos`, `decoder.{i}.*` without
cross-attention (with `q_rot`/`k_rot` when positions are rotary), `decoder.norm.*` (pre-LN) and
`logits`, all over the S + T positions of prompt then completion. The trace has no Encoder
section: the header says so, the Decoder section labels every position with its token, shows per
layer the LayerNorm, the numbered attention steps (the turn of q and k as step 2b), the look-ahead
mask over the whole sequence and the FFN, and the Output section the next token at every position.
"""

from __future__ import annotations

from utils.observe.family import DECODER_ONLY
from utils.observe.trace_one_stack import OneStackTracePrinter
from utils.observe.trace_printer import RULE, THIN

LOOK_AHEAD_NOTE = "4. Mask: look-ahead over prompt + completion: position i sees keys j <= i (and no pads)"


class DecoderOnlyTracePrinter(OneStackTracePrinter):
    """The trace of one decoder stack whose rows are the prompt's tokens followed by the target's."""

    stack_name = "decoder"

    @property
    def sequence(self) -> list[str]:
        return DECODER_ONLY.sequence_tokens(self.src_tokens, self.tgt_tokens)

    def block(self, i: int) -> None:
        seq, layer = self.sequence, f"decoder.{i}"
        self.say(THIN)
        self.say(f"Decoder layer {i}")
        self.value("layer input", f"{layer}.resid_pre", 1)
        self.norm(layer, "norm1", "self-attention")
        title = "Masked self-attention (look-ahead over prompt + completion)"
        self.attention(f"{layer}.self_attn", title, seq, seq, mask_note=LOOK_AHEAD_NOTE)
        self.residual(layer, "norm1", "self-attention", "resid_mid", "residual stream")
        self.norm(layer, "norm2", "feed-forward")
        self.ffn(layer)
        self.residual(layer, "norm2", "feed-forward", "resid_post", "layer output")
        if not self.pre_ln():
            self.value("layer output", f"{layer}.resid_post", 1)

    def format(self, num_layers: int) -> str:
        S, T = len(self.src_tokens), len(self.tgt_tokens)
        self.say(RULE)
        self.say(f"DECODER-ONLY MODEL   {DECODER_ONLY.summary}")
        self.say(RULE)
        prompt = " ".join(self.src_tokens) if S else "(none)"
        self.say(f"DECODER   {S + T} positions: prompt ({S}) then completion ({T})")
        self.say(f"          prompt: {prompt}   completion: {' '.join(self.tgt_tokens)}")
        self.say(RULE)
        self.value("token embedding", "tgt_embed", 1)
        if any(name.endswith(".q_rot") for name in self.cache):
            self.say("no position vector added: rotary positions turn q and k in each attention (step 2b)", 1)
        else:
            self.value("+ position embedding", "tgt_pos", 1)
        for i in range(num_layers):
            if self.layers is None or i in self.layers:
                self.block(i)
        if self.pre_ln():
            self.say(THIN)
            self.say("Final LayerNorm (pre-LN closes the stack with one)")
            self.value("LayerNorm input", "decoder.norm.in", 1)
            self.value("LayerNorm output", "decoder.norm.out", 1)
        self.say(RULE)
        self.say("OUTPUT    Linear to vocabulary at every position, softmax gives next-token probabilities")
        self.say(RULE)
        self.value("logits", "logits", 1)
        if self.predicted is not None:
            pairs = ", ".join(f"{t} -> {p}" for t, p in zip(self.sequence, self.predicted))
            self.say(f"most likely next token: {pairs}", 1)
        return "\n".join(self.lines)
