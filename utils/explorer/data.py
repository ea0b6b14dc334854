"""What explorer.html shows, gathered from the activation cache (and the run's snapshots) only.

Nothing here knows which version made the model: every number comes from `run_with_cache` (the
cache contract of docs/ARCHITECTURE.md) and from the `--track_internals` record, so a pytorch model
and its converted Hugging Face twin give the same page.

The page's data, one JSON object:

    family, summary, d_k, layers, heads     what model this is (utils.observe.family)
    modules      [{name, stack, module, layer, kind}] every attention of the cache, in forward order
    examples     [{label, modules: {name: {rows, cols, weights, scores, allowed, q, k, v, z, out,
                   pattern, entropy}}}]: per held-out example, per attention
    evolution    {module, steps, rows, cols, maps: {name: (steps, H, T, S)}} from --track_internals
    left_out     what the size budget dropped, said on the page

Tensors travel as base64 little-endian arrays: the attention weights and the scores (which the page
turns into weights itself, step 5) as float32, bit for bit the cache's; the vectors of the step view
(q, k, v, z and the output) as float16, the three significant digits the page prints. The size
budget, MAX_BYTES, keeps the head and model views of every example first, then the step view of the
first example, of the others, and the snapshots, and names on the page what it had to drop.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence

import numpy as np
import torch

from utils.observe.analysis import TransformerAnalyzer
from utils.observe.family import ENCODER_ONLY, Family

MAX_BYTES = 4_000_000  # the page's data at most: "a few MB" opens in a second, also for 60 tokens
MAX_EXAMPLES = 4  # held-out examples offered by the example picker
KIND = {
    ("encoder", "self_attn"): "encoder self-attention",
    ("decoder", "self_attn"): "decoder self-attention",
    ("decoder", "cross_attn"): "cross-attention",
}
TRACKED = {"encoder_self": ("encoder", "self_attn"), "decoder_self": ("decoder", "self_attn"),
           "decoder_cross": ("decoder", "cross_attn")}  # fmt: skip
STEP_FIELDS = ("q", "k", "v", "z", "out")  # the step view's vectors (float16)

Example = tuple  # (src (1, S) ids or (1, C, H, W) image, tgt_in (1, T), to_tokens or (src_fn, tgt_fn))


def packed(t: torch.Tensor, dtype: str = "f4") -> dict:
    """{shape, dtype, b64}: a tensor as the page decodes it (f4 float32, f2 float16, little-endian)."""
    a = torch.nan_to_num(t.detach().float().cpu(), nan=0.0).numpy()
    if dtype == "f2":
        a = np.clip(a, -65504, 65504)
    a = np.ascontiguousarray(a, dtype="<f4" if dtype == "f4" else "<f2")
    return {"shape": list(a.shape), "dtype": dtype, "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def unpacked(p: dict) -> np.ndarray:
    """The array of `packed` (tests and readers of the page's data)."""
    a = np.frombuffer(base64.b64decode(p["b64"]), dtype="<f4" if p["dtype"] == "f4" else "<f2")
    return a.astype(np.float32).reshape(p["shape"])


def _size(x) -> int:
    """Bytes of the base64 strings inside x (what dominates the page)."""
    if isinstance(x, dict):
        return sum(_size(v) for v in x.values())
    if isinstance(x, list):
        return sum(_size(v) for v in x)
    return len(x) if isinstance(x, str) else 8


def _labels(to_tokens, ids, n: int) -> list[str]:
    """Token strings of `ids`, or position numbers where the tokenizer does not give n of them."""
    try:
        tokens = [str(t) for t in to_tokens(ids)] if n else []
    except (IndexError, KeyError, TypeError, ValueError):
        tokens = []
    return tokens if len(tokens) == n else [str(i) for i in range(n)]


def _sides(example: Example, family: Family) -> tuple[list[str], list[str]]:
    """(source labels, target labels) of one example; an encoder-only model has no target side."""
    src, tgt_in, to_tokens = example
    src_fn, tgt_fn = to_tokens if isinstance(to_tokens, tuple) else (to_tokens, to_tokens)
    src_n = src.size(1) if src.dim() == 2 else None  # an image: the tokenizer names its positions
    src_tokens = [str(t) for t in src_fn(src[0])] if src_n is None else _labels(src_fn, src[0], src_n)
    tgt_tokens = [] if family is ENCODER_ONLY else _labels(tgt_fn, tgt_in[0], tgt_in.size(1))
    return src_tokens, tgt_tokens


def _axes(family: Family, stack: str, module: str, sides, shape) -> tuple[list[str], list[str]]:
    """(query labels, key labels) of an attention whose weights have `shape` (..., T, S): the tokens,
    or position numbers where they do not count T and S."""
    rows, cols = family.axes_tokens(stack, module, *sides)
    T, S = shape[-2:]
    rows = rows if rows is not None and len(rows) == T else [str(i) for i in range(T)]
    return rows, cols if cols is not None and len(cols) == S else [str(i) for i in range(S)]


def _module_record(cache, name: str, stack: str, module: str, family: Family, sides, patterns) -> dict:
    """One attention of one example: the head and model views' weights, the step view's numbers."""
    w = cache[f"{name}.weights"][0]  # (H, T, S)
    rows, cols = _axes(family, stack, module, sides, w.shape)
    masked = cache.get(f"{name}.masked_scores")
    allowed = torch.isfinite(masked[0, 0]).tolist() if masked is not None else None
    record = {
        "rows": rows,
        "cols": cols,
        "weights": packed(w),
        "scores": packed(cache[f"{name}.scores"][0]) if f"{name}.scores" in cache else None,
        # the mask of step 4, one string per query: "1" where the key may be seen
        "allowed": ["".join("1" if a else "0" for a in row) for row in allowed] if allowed else None,
        "pattern": [h["pattern"] for h in patterns.get(name, [])],
        "entropy": [h.get("normalized_entropy") for h in patterns.get(name, [])],
    }  # fmt: skip
    q = cache.get(f"{name}.q_rot", cache.get(f"{name}.q"))  # rotary: the turned q, whose dot products score
    for field, t in zip(STEP_FIELDS, (q, *(cache.get(f"{name}.{f}") for f in STEP_FIELDS[1:]))):
        record[field] = packed(t[0], "f2") if t is not None else None
    return record


def example_record(analyzer: TransformerAnalyzer, example: Example) -> tuple[dict, list]:
    """(record, modules) of one example: its cache's every attention."""
    src, tgt_in, _ = example
    _, cache = analyzer.run(src, tgt_in)
    family = analyzer.family
    sides = _sides(example, family)
    patterns = analyzer.analyze_attention_patterns(cache, src, tgt_in)
    modules = analyzer.attention_modules(cache, "weights")
    label = " ".join(sides[0]) + (" → " + " ".join(sides[1]) if sides[1] else "")
    records = {name: _module_record(cache, name, stack, module, family, sides, patterns)
               for name, stack, module in modules}  # fmt: skip
    meta = [{"name": name, "stack": stack, "module": module, "layer": int(name.split(".")[1]),
             "kind": KIND[stack, module]} for name, stack, module in modules]  # fmt: skip
    return {"label": label, "modules": records}, meta


def tracked_module(family: Family, num_layers: int) -> str:
    """The attention --track_internals follows: the last layer's cross-attention of an encoder-decoder,
    its self-attention in the other families."""
    stack, module = TRACKED[family.tracked_kind]
    return f"{stack}.{num_layers - 1}.{module}"


def evolution_record(internals: dict, family: Family, to_tokens, num_layers: int) -> dict | None:
    """The --track_internals snapshots (InternalsRecorder.to_dict, or internals.json) for the slider:
    every snapshot's weights of every attention, with the probe's labels; None without snapshots."""
    snapshots = (internals or {}).get("attention_maps") or []
    if not snapshots:
        return None
    probe = internals.get("probe", {})
    src = torch.tensor(probe.get("src", []))
    tgt = torch.tensor(probe.get("tgt", []), dtype=torch.long).view(1, -1)
    src = src.view(1, -1).long() if src.dim() <= 1 else src.unsqueeze(0)
    sides = _sides((src, tgt, to_tokens), family)
    record = {"module": tracked_module(family, num_layers), "steps": [s["step"] for s in snapshots],
              "rows": {}, "cols": {}, "maps": {}}  # fmt: skip
    for cache_name in snapshots[-1]["weights"]:
        if not all(cache_name in s["weights"] for s in snapshots):
            continue
        maps = torch.stack([torch.as_tensor(s["weights"][cache_name]).float() for s in snapshots])
        name = cache_name.removesuffix(".weights")  # the attention's name, as in "modules"
        stack_, _, module_ = name.split(".")
        record["rows"][name], record["cols"][name] = _axes(family, stack_, module_, sides, maps.shape)
        record["maps"][name] = packed(maps)
    return record if record["maps"] else None


def _fit(data: dict, max_bytes: int) -> None:
    """Drop, least needed first, what does not fit in max_bytes, and say so in data["left_out"]."""
    examples, evolution = data["examples"], data["evolution"]

    def total() -> int:
        return _size(examples) + _size(evolution)

    if evolution and total() > max_bytes:  # the snapshots of the other attentions, then the rest
        others = [n for n in evolution["maps"] if n != evolution["module"]]
        for name in others:
            del evolution["maps"][name]
        if others:
            data["left_out"].append(f"the training snapshots of {len(others)} attentions other than "
                                    f"{evolution['module']}")  # fmt: skip
        if total() > max_bytes:
            data["evolution"] = evolution = None
            data["left_out"].append("the training snapshots (the page's size budget)")
    for index in range(len(examples) - 1, -1, -1):  # the step view of the last examples first
        if total() <= max_bytes:
            break
        for record in examples[index]["modules"].values():
            for field in STEP_FIELDS:
                record[field] = None
        data["left_out"].append(f"the step view's vectors of example {index + 1}")
    while len(examples) > 1 and total() > max_bytes:
        examples.pop()
        data["left_out"].append(f"example {len(examples) + 1} (the page's size budget)")


def explorer_data(model, examples: Sequence[Example], internals: dict | None = None, title: str = "",
                  max_bytes: int = MAX_BYTES) -> dict:  # fmt: skip
    """Everything the page shows, for up to MAX_EXAMPLES examples, within max_bytes."""
    if not examples:
        raise ValueError("the explorer needs at least one example")
    analyzer = TransformerAnalyzer(model)
    family, cfg = analyzer.family, model.config
    records, modules = [], []
    for example in examples[:MAX_EXAMPLES]:
        record, modules = example_record(analyzer, example)
        records.append(record)
    heads = int(getattr(cfg, "num_heads", 0) or getattr(cfg, "num_attention_heads", 0))
    layers = 1 + max((m["layer"] for m in modules), default=0)
    first_tokens = examples[0][2]
    data = {
        "title": title,
        "family": family.name,
        "summary": family.summary,
        "arch": getattr(cfg, "arch", "transformer"),
        "heads": heads,
        "layers": layers,
        "d_k": int(getattr(cfg, "hidden_size", getattr(cfg, "d_model", 0)) // max(heads, 1)),
        "modules": modules,
        "tracked": tracked_module(family, layers),  # the attention the page opens on
        "examples": records,
        "evolution": evolution_record(internals, family, first_tokens, layers) if internals else None,
        "left_out": [],
    }
    _fit(data, max_bytes)
    return data


def examples_of_batch(batch: dict, to_tokens: Callable, pad_id: int, n: int = MAX_EXAMPLES) -> list[Example]:
    """The first n rows of a held-out batch (a run's probe), each cut to its real length."""
    from utils.data.tasks import example_row

    rows = min(n, batch["src"].size(0))
    return [(*example_row(batch, i, pad_id), to_tokens) for i in range(rows)]
