"""What a Transformer computes inside, read from its activation cache (either version).

`TransformerAnalyzer` talks to a model only through `run_with_cache`, the cache names
of ../shared/DESIGN.md, `model.config` and `named_parameters`, so it works for the
from-scratch and the Hugging Face model alike. Every result is plain JSON data.

Masks come from the ids: source keys/queries are real where `src != pad_id` (or where
`attention_mask` is 1), target ones where `tgt != pad_id`; decoder self-attention also
obeys the look-ahead mask. Padding is assumed on the right, as `utils.data.tasks` makes it. A
decoder-only model's (utils.observe.family) rows and keys are the prompt's ids then the target's,
so the pads of a short prompt, between the two, are left out too.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from utils.observe.attention_patterns import (
    THRESHOLDS,
    _reduce,
    _row_measures,
    classify_features,
)
from utils.observe.embeddings import analyze_embeddings, embedding_weights
from utils.observe.encoder_analysis import encoder_only_report, head_loss
from utils.observe.family import ENCODER_ONLY, family_of
from utils.observe.guide_forms import cache_and_ids, strongest_links, token_axes
from utils.observe.tracing import run_with_cache

_ATTN = re.compile(r"^(encoder|decoder)\.(\d+)\.(self_attn|cross_attn)\.")
_LAYER_PARAM = re.compile(r"(encoder|decoder)\.(?:layers?|block)\.(\d+)\.(.+)")


def parameter_group(name: str) -> str:
    """`encoder.layers.0.self_attn.q_proj.weight` or HF `model.encoder.layers.0.fc1.weight`
    -> `encoder.0.self_attn` / `encoder.0.ffn`; outside the layers: embeddings, positions (a learned
    position table: the GPT's `positions.embedding.weight`), lm_head, final_norm."""
    if m := _LAYER_PARAM.search(name):
        stack, index, rest = m.groups()
        if "norm" in rest:  # before the attention names: HF's self_attn_layer_norm is a norm
            sub = "norm"
        elif "cross_attn" in rest or "encoder_attn" in rest:
            sub = "cross_attn"
        elif "self_attn" in rest or "attention" in rest:
            sub = "self_attn"
        elif re.search(r"ffn|fc\d|mlp|feed_forward", rest):
            sub = "ffn"
        else:
            sub = "other"
        return f"{stack}.{index}.{sub}"
    for key, group in (("position", "positions"), ("embed", "embeddings"), ("shared", "embeddings"),
                       ("lm_head", "lm_head")):  # fmt: skip
        if key in name:
            return group
    return "final_norm" if "norm" in name else "other"


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _json_safe(x.tolist())
    if isinstance(x, float) or hasattr(x, "item"):
        x = float(x)
        return x if math.isfinite(x) else None
    return x if isinstance(x, (int, str, bool)) or x is None else str(x)


def _summary(x: torch.Tensor, p: str) -> dict:
    """Mean and std of the entries of (N, d) vectors, and their mean L2 norm."""
    return {f"{p}_mean": x.mean(), f"{p}_std": x.std(correction=0), f"{p}_norm": x.norm(dim=-1).mean()}


def _group_order(group: str) -> tuple:
    parts = group.split(".")
    if len(parts) == 3:
        subs = ("self_attn", "cross_attn", "ffn", "norm", "other")
        return (1 if parts[0] == "encoder" else 2, int(parts[1]), subs.index(parts[2]))
    rank = {"embeddings": 0, "positions": 0, "final_norm": 3, "lm_head": 4}.get(group, 5)
    return (rank, int(group == "positions"), 0)


class TransformerAnalyzer:
    """Statistics of attention, Q/K/V, sublayer updates, gradients and embeddings of one model.

    The cache-driven methods take the ids the cache was made from, to leave PAD out:
    `input_ids` (B, S) source, `target_ids` (B, T) BOS-led decoder input, optional
    `attention_mask` (B, S) for the source (1 = real). Without ids every position counts.
    """

    def __init__(self, model) -> None:
        self.model = model
        config = model.config
        self.pad_id = getattr(config, "pad_id", getattr(config, "pad_token_id", 0))  # HF name as a fallback
        self.family = family_of(model=model)  # encoder-decoder, or decoder-only (utils.observe.family)
        self.activation = getattr(config, "activation", "relu")

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def run(self, input_ids, target_ids, names=None):
        """Eval-mode `run_with_cache` (the training mode is restored afterwards) -> (logits, cache)."""
        was_training = self.model.training
        self.model.eval()
        try:
            dev = self._device()
            return run_with_cache(self.model, input_ids.to(dev), target_ids.to(dev), names=names)
        finally:
            self.model.train(was_training)

    def _real(self, ids, n: int, attention_mask=None) -> torch.Tensor:
        """(B | 1, n) True at real positions: attention_mask == 1, else ids != PAD, else everywhere."""
        if attention_mask is not None:
            return torch.as_tensor(attention_mask).bool().cpu()
        if ids is None or torch.as_tensor(ids).dim() > 2:  # no ids, or a ViT's images: all real
            return torch.ones(1, n, dtype=torch.bool)
        return (torch.as_tensor(ids) != self.pad_id).cpu()

    def _parts_ok(self, T: int, S: int, ids) -> tuple[torch.Tensor, torch.Tensor]:
        """(source real (B|1, S'), target real (B|1, T')) for an attention with T rows and S keys: the
        encoder-decoder's S' = S, T' = T; a decoder-only model's rows are the prompt then the target."""
        input_ids, target_ids, attention_mask = ids
        if not self.family.one_sequence:
            return self._real(input_ids, S, attention_mask), self._real(target_ids, T)
        n_src = torch.as_tensor(input_ids).size(-1) if input_ids is not None else None
        n_tgt = torch.as_tensor(target_ids).size(-1) if target_ids is not None else T - (n_src or 0)
        return self._real(input_ids, T - n_tgt, attention_mask), self._real(target_ids, n_tgt)

    def _masks(self, stack, module, T, S, ids):
        """(real queries (B|1, T), allowed keys (B|1, T, S), real keys (B|1, S)) of one attention."""
        return self.family.attention_masks(stack, module, *self._parts_ok(T, S, ids))

    @staticmethod
    def attention_modules(cache, leaf: str) -> list[tuple[str, str, str]]:
        """[(name, stack, module)] such as ('decoder.0.cross_attn', 'decoder', 'cross_attn'), in order."""
        found = {(m[1], int(m[2]), m[3]) for n in cache if (m := _ATTN.match(n)) and n.endswith("." + leaf)}
        ordered = sorted(found, key=lambda s: (s[0] != "encoder", s[1], s[2] != "self_attn"))
        return [(f"{stack}.{i}.{module}", stack, module) for stack, i, module in ordered]

    def analyze_qkv_statistics(self, cache, *ids, input_ids=None, target_ids=None, attention_mask=None):
        """{'decoder.0.cross_attn': [per head: q/k/v mean, std, norm; std of q.k raw and / sqrt(d_k)]}.

        `analyze_qkv_statistics(input_ids[, target_ids])` (the guide's form) runs the model on the ids;
        `(cache, input_ids, target_ids, attention_mask)` reads a cache made before (guide_forms.py).
        With rotary positions q and k are the turned vectors (`q_rot`; the cache's `k` is turned), the
        ones whose dot products are the scores."""
        given = {"input_ids": input_ids, "target_ids": target_ids, "attention_mask": attention_mask}
        cache, ids = cache_and_ids(self, cache, ids, given)
        out = {}
        for name, stack, module in self.attention_modules(cache, "q"):
            q = cache.get(f"{name}.q_rot", cache[f"{name}.q"])
            k, v = cache[f"{name}.k"], cache[f"{name}.v"]
            q, k, v = (t.float().cpu() for t in (q, k, v))  # (B, H, T|S, d_k)
            qok, allowed, kok = self._masks(stack, module, q.size(2), k.size(2), ids)
            qok, kok = qok.expand(q.size(0), -1), kok.expand(k.size(0), -1)
            raw = q @ k.transpose(-2, -1)  # (B, H, T, S): q.k before the 1/sqrt(d_k) of eq. (1)
            pairs = (qok[:, :, None] & allowed).expand(raw.size(0), -1, -1)  # (B, T, S)
            heads = []
            for h in range(q.size(1)):
                entry = {"head": h, **_summary(q[:, h][qok], "q"), **_summary(k[:, h][kok], "k")}
                entry |= _summary(v[:, h][kok], "v")  # (N, d_k) vectors at real positions only
                s = raw[:, h][pairs].std(correction=0)
                heads.append(entry | {"score_std_raw": s, "score_std_scaled": s / math.sqrt(q.size(-1))})
            out[name] = heads
        return _json_safe(out)

    def analyze_attention_patterns(self, cache, *ids, input_ids=None, target_ids=None, attention_mask=None,
                                   tokens=None) -> dict:  # fmt: skip
        """{'encoder.0.self_attn': [per head: entropy, normalized_entropy, span, masses, pattern]}.

        Either form of guide_forms.py: `(input_ids, tokens=tokens)` runs the model, `(cache, ...)`
        reads one. With `tokens`, each head also lists, for example 0, which key token each query
        token attends to most (`strongest_links`, "h -> o")."""
        given = {"input_ids": input_ids, "target_ids": target_ids, "attention_mask": attention_mask}
        cache, ids = cache_and_ids(self, cache, ids, given)
        src_tokens, tgt_tokens = token_axes(tokens)
        out = {}
        for name, stack, module in self.attention_modules(cache, "weights"):
            w = cache[f"{name}.weights"].float().cpu()  # (B, H, T, S)
            qok, allowed, kok = self._masks(stack, module, w.size(2), w.size(3), ids)
            m, masks = _row_measures(w, qok[:, None], allowed[:, None], kok[:, None])
            per_head = _reduce(m, masks, dims=(0, 2))  # averaged over batch and queries -> (H,)
            heads = [{"head": h, **{k: v[h] for k, v in per_head.items()}} for h in range(w.size(1))]
            out[name] = [entry | {"pattern": classify_features(entry)} for entry in heads]
            if tokens is not None:
                rows, cols = self.family.axes_tokens(stack, module, src_tokens, tgt_tokens)
                for entry in out[name]:
                    entry["strongest_links"] = strongest_links(w[0, entry["head"]], rows, cols, qok[0])
        return _json_safe(out)

    def analyze_layer_contributions(self, cache, input_ids=None, target_ids=None, attention_mask=None):
        """||sublayer output|| / ||residual stream entering it|| per real position, and FFN use.

        `dead_fraction`: share of FFN outputs that are off, ReLU's exact zeros; for GELU, whose output
        is never quite 0, the share of inputs <= 0, where GELU's output lies within 0.17 of 0."""
        sublayers, ffn = [], []
        pattern = re.compile(r"(encoder|decoder)\.(\d+)\.ffn\.post_act$")
        found = {(m[1], int(m[2])) for n in cache if (m := pattern.match(n))}
        for stack, layer in sorted(found, key=lambda s: (s[0] != "encoder", s[1])):
            p = f"{stack}.{layer}"
            post = cache[f"{p}.ffn.post_act"].float().cpu()  # (B, T, d_ff)
            n, ids = post.size(1), (input_ids, target_ids, attention_mask)
            ok = self.family.rows_ok(stack, *self._parts_ok(n, n, ids)).expand(post.size(0), -1)  # (B, T)
            for sub, resid in self.family.layer_steps(stack):
                if f"{p}.{sub}.out" in cache and f"{p}.{resid}" in cache:
                    update = cache[f"{p}.{sub}.out"].float().cpu().norm(dim=-1)[ok]  # (N,)
                    stream = cache[f"{p}.{resid}"].float().cpu().norm(dim=-1)[ok]
                    ratio = (update / stream.clamp_min(1e-12)).mean()
                    sublayers.append({"layer": p, "sublayer": sub, "relative_update": ratio})
                    sublayers[-1] |= {"update_norm": update.mean(), "resid_norm": stream.mean()}
            acts = post[ok]  # (N, d_ff)
            off = acts == 0  # ReLU outputs that are 0
            if self.activation != "relu" and f"{p}.ffn.pre_act" in cache:
                off = cache[f"{p}.ffn.pre_act"].float().cpu()[ok] <= 0
            entry = {"layer": p, "dead_fraction": off.float().mean()}
            entry["never_active_fraction"] = off.all(0).float().mean()  # units off at every position
            ffn.append(entry | {"mean_activation": acts.mean()})
        return _json_safe({"sublayers": sublayers, "ffn": ffn})

    def embedding_weights(self) -> dict[str, torch.Tensor]:
        """Token-embedding matrices (V, D) by name, tied ones once (utils.observe.embeddings)."""
        return embedding_weights(self.model)

    def analyze_embeddings(self, weights: dict | None = None) -> dict:
        """Norm distribution and mean pairwise cosine similarity of each embedding matrix (and of a
        ViT's patch-projection filters): utils.observe.embeddings."""
        return _json_safe(analyze_embeddings(self.model, weights))

    def analyze_gradient_flow(self, input_ids, target_ids, labels=None, train_mode: bool = False) -> dict:
        """Gradient norm per parameter group after one cross-entropy backward pass.

        `labels` default to `target_ids` shifted left (the next token of the BOS-led decoder
        input, PAD at the end); an encoder-only model's must be given: (B,) classes, or the masked
        LM's (B, S), PAD where nothing was masked. Dropout is off unless `train_mode`. Gradients
        already on the parameters are put back afterwards, so this is safe between accumulation steps.
        """
        dev = self._device()
        src, tgt = input_ids.to(dev), target_ids.to(dev)
        if labels is None and self.family is ENCODER_ONLY:
            raise ValueError("an encoder-only model's gradient flow needs its labels (classes or masked ids)")
        if labels is None:
            labels = torch.cat([tgt[:, 1:], torch.full_like(tgt[:, :1], self.pad_id)], dim=1)
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        saved, was_training = [p.grad for _, p in params], self.model.training
        self.model.train(train_mode)
        squares: dict[str, float] = {}
        try:
            for _, p in params:
                p.grad = None
            with torch.enable_grad():
                logits, _ = run_with_cache(self.model, src, tgt, names=["logits"])
                loss = head_loss(logits, labels.to(dev), self.pad_id)  # classes, or tokens but PAD
                loss.backward()
            for name, p in params:
                if p.grad is not None:
                    group = parameter_group(name)
                    squares[group] = squares.get(group, 0.0) + p.grad.float().pow(2).sum().item()
        finally:
            for (_, p), grad in zip(params, saved):
                p.grad = grad
            self.model.train(was_training)
        groups = {g: math.sqrt(squares[g]) for g in sorted(squares, key=_group_order)}
        return _json_safe({"loss": loss, "total_norm": math.sqrt(sum(squares.values())), "groups": groups})

    def comprehensive_analysis(
        self, input_ids, target_ids, attention_mask=None, tokens=None, save_path=None, labels=None,
        cache=None, vocab_tokens=None,
    ) -> dict:  # fmt: skip
        """All analyses of one batch as JSON data; with `save_path` (a folder or a .json file) also
        written as analysis_report.json. Pass the `cache` of `run(...)` to skip a second forward. An
        encoder-only model's report has an "encoder_only" section (utils.observe.encoder_analysis);
        `vocab_tokens` (id order) let it find BERT's special tokens by name."""
        if cache is None:
            _, cache = self.run(input_ids, target_ids)
        ids = (input_ids.cpu(), target_ids.cpu(), attention_mask)
        config = {k: getattr(self.model.config, k, None) for k in ("hidden_size", "num_heads", "num_layers")}
        report = {
            "family": self.family.name,  # utils.observe.family: which stacks the cache names hold
            "config": config | {"pad_id": self.pad_id, "activation": self.activation},
            "tokens": tokens,
            "thresholds": dict(THRESHOLDS),
            "qkv_statistics": self.analyze_qkv_statistics(cache, *ids),
            "attention_patterns": self.analyze_attention_patterns(cache, *ids),
            "layer_contributions": self.analyze_layer_contributions(cache, *ids),
            "embeddings": self.analyze_embeddings(),
            "gradient_flow": self.analyze_gradient_flow(input_ids, target_ids, labels),
        }
        if self.family is ENCODER_ONLY:
            row0 = token_axes(tokens)[0]
            section = encoder_only_report(self.model, cache, input_ids.cpu(), labels, self.pad_id, row0,
                                          vocab_tokens)  # fmt: skip
            report["encoder_only"] = section
        report = _json_safe(report)
        if save_path is not None:
            path = Path(save_path)
            path = path if path.suffix == ".json" else path / "analysis_report.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=2), encoding="utf-8")
        return report
