"""Shared fixtures: no network, the tiny model (tests/factory.py builds every model), shared runs."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

# No network for the whole session, in this process and in every Python process a test starts:
# tests/no_network/sitecustomize.py refuses connections that leave the machine; putting its folder
# first on PYTHONPATH makes each child interpreter load it at start-up (`python main.py ...`).
NO_NETWORK = ROOT / "tests" / "no_network"
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(NO_NETWORK), os.environ.get("PYTHONPATH")) if p)
_spec = importlib.util.spec_from_file_location("tests_no_network", NO_NETWORK / "sitecustomize.py")
no_network = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(no_network)  # blocks on import, before any test module is collected

from pytorch_version.model import Transformer
from tests.factory import tiny_config, tiny_pytorch  # noqa: F401  (tests import tiny_config from here too)

# Fixtures that train a model: every test that asks for one is `slow` (pytest -m "not slow" skips it).
TRAINING_FIXTURES = {"copy_run", "copy_model"}


def pytest_collection_modifyitems(items):
    for item in items:
        if TRAINING_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def network_blocked():
    """Every test runs with non-loopback sockets refused (see NO_NETWORK above)."""
    no_network.block_network()
    yield


@pytest.fixture
def tiny_model() -> Transformer:
    return tiny_pytorch()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A source batch with padding in row 0 and a BOS-led target batch."""
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 30, (3, 7), generator=g)
    src[0, 5:] = 0
    tgt = torch.randint(4, 30, (3, 6), generator=g)
    tgt[:, 0] = 1
    return src, tgt


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread: tiny models gain nothing from more, and on a shared 2-core machine
    spinning OpenMP threads of concurrent processes slow each other down many times over."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# A short copy-task run shared by the training and decoding tests: under 10 s on one core.
# Checked by hand for seeds 0-4: best held-out exact match >= 0.995, last epoch >= 0.93 (a model
# this small still has the odd loss spike, so the last epoch is held to a lower bar than the best).
COPY_RUN = dict(version="pytorch", task="copy", seed=0, device="cpu", train_size=3000, eval_size=200,
                min_len=2, max_len=4, hidden_size=32, num_layers=2, num_heads=4, ffn_size=64,
                dropout=0.0, label_smoothing=0.1, epochs=8, batch_size=32, warmup_steps=200,
                lr_factor=0.5, quiet=True)  # fmt: skip


@pytest.fixture(scope="session")
def copy_run(tmp_path_factory):
    """(RunConfig, summary dict, results folder) of one `pytorch_version.train.train` run."""
    from pytorch_version.train import train
    from utils.runtime.config import RunConfig

    cfg = RunConfig(output_dir=str(tmp_path_factory.mktemp("copy_run")), **COPY_RUN)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train(cfg)
    finally:
        torch.set_num_threads(before)
    return cfg, summary, Path(cfg.output_dir) / "results_pytorch"
