"""The speed benchmark's baselines are what they claim to be (benchmarks/speed_models.py)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.speed_models import BUILDERS, VOCAB, logits_of, make_batch, ours, strip_capture_points

pytestmark = pytest.mark.slow  # the benchmark's d_model 256 models and Bart


def test_stripped_model_computes_the_same_function():
    """The 'no capture points' baseline differs from ours only by the missing HookPoint modules."""
    torch.manual_seed(0)
    traced = ours().eval()
    bare = strip_capture_points(ours().eval())
    bare.load_state_dict(traced.state_dict())
    src, tgt, _ = make_batch(3)
    with torch.no_grad():
        torch.testing.assert_close(bare(src, tgt), traced(src, tgt))
    assert not any(type(m).__name__ == "HookPoint" for m in bare.modules())


def test_every_peer_gives_logits_over_the_same_vocabulary():
    src, tgt, _ = make_batch(5)
    for name, build in BUILDERS.items():
        torch.manual_seed(0)
        with torch.no_grad():
            logits = logits_of(name, build().eval(), src, tgt)
        assert logits.shape == (*tgt.shape, VOCAB), name
