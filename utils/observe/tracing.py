"""Named capture points and the activation cache.

A `HookPoint` is an identity module placed at a step of the forward pass (in the
style of TransformerLens). With nothing listening it returns its input and costs
one module call; `capture(model)` attaches forward hooks for the duration of a
`with` block and collects every value into a flat `{name: tensor}` cache.

Cache names are derived from module paths: `encoder.layers.0.self_attn.hook_q`
becomes `encoder.0.self_attn.q` (docs/ARCHITECTURE.md, "The cache contract").

`run_with_cache(model, src, tgt)` is how everything in utils.observe asks any model for its
cache: a model with its own `run_with_cache` method (pytorch_version) answers itself; a model
without capture points (the Hugging Face one, which ships alone and knows nothing of tracing)
is answered by the tracer its package registered with `register_tracer`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


class HookPoint(nn.Module):
    """Identity module that marks a named step; hooks on it see the value passing through."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def active(self) -> bool:
        """True when some hook listens, i.e. the value is wanted."""
        return bool(self._forward_hooks)


def cache_name(module_path: str) -> str:
    """`decoder.layers.1.cross_attn.hook_weights` -> `decoder.1.cross_attn.weights`."""
    parts = [p for p in module_path.split(".") if p != "layers"]
    parts[-1] = parts[-1].removeprefix("hook_")
    return ".".join(parts)


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """All capture points of a model by cache name."""
    return {cache_name(path): m for path, m in model.named_modules() if isinstance(m, HookPoint)}


NameFilter = str | Iterable[str] | Callable[[str], bool] | None


def _matcher(names: NameFilter) -> Callable[[str], bool]:
    if names is None:
        return lambda name: True
    if callable(names):
        return names
    patterns = [names] if isinstance(names, str) else list(names)
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)


@contextmanager
def capture(model: nn.Module, names: NameFilter = None, detach: bool = True) -> Iterator[dict]:
    """Collect the values passing the model's capture points inside the block.

    Args:
        names: which points to record: None for all, a glob such as `"*.weights"`,
            a list of globs, or a predicate on the cache name. Fewer names, less memory.
        detach: store detached tensors (True) or keep them in the autograd graph.

    Yields the cache dict; it is filled as the model runs. Hooks are removed when the
    block ends, even on error. A point that runs twice (incremental decoding) keeps a
    list of its values in call order under the same name.
    """
    wanted = _matcher(names)
    cache: dict[str, torch.Tensor | list[torch.Tensor]] = {}
    handles = []

    def recorder(name: str):
        def hook(_module, _inputs, output):
            value = output.detach() if detach else output
            if name not in cache:
                cache[name] = value
            elif isinstance(cache[name], list):
                cache[name].append(value)
            else:
                cache[name] = [cache[name], value]

        return hook

    for name, point in hook_points(model).items():
        if wanted(name):
            handles.append(point.register_forward_hook(recorder(name)))
    try:
        yield cache
    finally:
        for handle in handles:
            handle.remove()


Tracer = Callable[..., tuple[torch.Tensor, dict]]
TRACERS: dict[type, Tracer] = {}  # model class -> fn(model, src, tgt, names, detach) -> (logits, cache)


def register_tracer(model_class: type, tracer: Tracer) -> None:
    """Say how to record the cache of `model_class` (and its subclasses) from outside the model."""
    TRACERS[model_class] = tracer


def run_with_cache(model: nn.Module, src: torch.Tensor, tgt: torch.Tensor, names: NameFilter = None,
                   detach: bool = True) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """Teacher-forced logits and the activation cache of either version's model."""
    own = getattr(model, "run_with_cache", None)
    if own is not None:
        return own(src, tgt, names=names, detach=detach)
    for cls in type(model).__mro__:
        if cls in TRACERS:
            return TRACERS[cls](model, src, tgt, names, detach)
    raise TypeError(f"no tracer for a {type(model).__name__}: import the package that registers one")
