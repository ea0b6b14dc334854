"""On a CUDA GPU: every path runs on --device cuda and gives what the CPU gives; and the GPU check
(benchmarks/gpu_check.sh) says in one line that it needs a GPU where there is none.

The tests marked `cuda` (`pytest -m cuda tests/gpu`, as benchmarks/gpu_check.sh runs them) are skipped
without a CUDA GPU; each is a tiny run of a few seconds on one (those that train are `slow` too):
    training     pytorch_version (float32, --bf16), the HF version (--fp16, --bf16), a GPT, a BERT
    equivalence  one model's logits (and greedy tokens) on the CPU and on the GPU, the same weights
    decoding     a checkpoint trained on the GPU, decoded with --checkpoint ... --source on cuda
`--device cuda` without CUDA (one `main.py: error:` line, exit 2) is tests/cli/test_core_cli.py's
cuda_without_gpu case, not repeated here.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from tests.factory import tiny_gpt, tiny_pytorch
from tests.robust_helpers import TINY, flags, main_in_process, run_main
from utils.fast import SpeedUps

ROOT = Path(__file__).resolve().parents[2]
GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"
HAS_CUDA = torch.cuda.is_available()
NO_CUDA = "needs a CUDA GPU (torch.cuda.is_available() is False)"
NO_GPU_LINE = "gpu_check.sh: no CUDA GPU here (torch.cuda.is_available() is False); nothing was run"

# tests/robust_helpers.TINY (a copy task, 10 batches) on the GPU, for one epoch
ON_CUDA = {**TINY, "device": "cuda", "epochs": 1}
# the float32 run says so: auto may pick bf16 on a GPU (utils/runtime/precision.py)
FLOAT32 = {"precision": "fp32"}


def cuda(test):
    """Marked `cuda`, and skipped where there is no CUDA GPU."""
    return pytest.mark.cuda(pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)(test))


def _train(output_dir: Path, capsys, version: str = "pytorch", *extra: str, **settings) -> Path:
    """main.py ARGS in this process; exit code 0; the results folder."""
    argv = ["--version", version, *flags(**{**ON_CUDA, **settings}), *extra, "--output_dir", str(output_dir)]
    code, out, err = main_in_process(argv, capsys)
    assert code == 0, err[-3000:]
    assert "Traceback" not in out + err, err[-3000:]
    return output_dir / f"results_{version}"


def _pytorch_checkpoints(results: Path) -> set[str]:
    return {p.name for p in (results / "checkpoints").iterdir()}


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory) -> Path:
    """results_pytorch/ of one float32 epoch on cuda, run as a user runs it (`python main.py ...`)."""
    folder = tmp_path_factory.mktemp("cuda_run")
    argv = ["--version", "pytorch", *flags(**ON_CUDA, **FLOAT32), "--output_dir", str(folder)]
    done = run_main(*argv, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return folder / "results_pytorch"


# training on the GPU


@cuda
@pytest.mark.slow  # trains a model
def test_pytorch_version_trains_an_epoch_on_cuda_and_writes_its_checkpoint(cuda_run):
    assert {"checkpoint_epoch_1.pt", "best_model.pt"} <= _pytorch_checkpoints(cuda_run)
    assert (cuda_run / "summary.json").is_file()
    saved = torch.load(cuda_run / "checkpoints" / "best_model.pt", map_location="cpu", weights_only=True)
    weights = [v for v in saved["model_state"].values() if v.is_floating_point()]
    assert weights and all(torch.isfinite(v).all() for v in weights)


@cuda
@pytest.mark.slow  # trains a model
def test_pytorch_version_trains_with_bf16_autocast_on_cuda(tmp_path, capsys):
    results = _train(tmp_path, capsys, "pytorch", bf16=True)
    assert {"checkpoint_epoch_1.pt", "best_model.pt"} <= _pytorch_checkpoints(results)


@cuda
@pytest.mark.slow  # trains a model
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_huggingface_version_trains_with_mixed_precision_on_cuda(tmp_path, capsys, precision):
    results = _train(tmp_path, capsys, "huggingface", **{precision: True})
    assert (results / "model.safetensors").is_file()
    assert (results / "summary.json").is_file()


@cuda
@pytest.mark.slow  # trains a model
def test_a_gpt_trains_on_cuda(tmp_path, capsys):
    results = _train(tmp_path, capsys, "pytorch", arch="gpt", task="reversal")
    assert "best_model.pt" in _pytorch_checkpoints(results)


@cuda
@pytest.mark.slow  # trains a model
def test_a_bert_trains_on_cuda(tmp_path, capsys):
    results = _train(tmp_path, capsys, "pytorch", arch="bert", task="palindrome")
    assert "best_model.pt" in _pytorch_checkpoints(results)


# the same weights on the CPU and on the GPU

BUILDERS = {"encoder-decoder": tiny_pytorch, "gpt": tiny_gpt}
SPEEDS = {"readable": SpeedUps.none(), "fast": SpeedUps()}


@pytest.fixture
def exact_float32():
    """float32 matmuls in full float32 on the GPU (no TF32), whatever the process set before."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


@cuda
@pytest.mark.parametrize("speed", SPEEDS.values(), ids=SPEEDS.keys())
@pytest.mark.parametrize("arch", BUILDERS)
def test_logits_on_cuda_equal_the_cpus_for_the_same_weights(arch, speed, exact_float32):
    from pytorch_version.decoding import greedy_decode

    on_cpu = speed.plug_in(BUILDERS[arch]())  # pytorch_version's constructors (tests/factory.py)
    on_gpu = copy.deepcopy(on_cpu).to("cuda")  # as the toolkit does: speed-ups plugged in, then moved
    src = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0], [14, 15, 16, 17, 0, 0]])
    tgt = torch.tensor([[1, 20, 21, 22, 23], [1, 24, 25, 0, 0], [1, 26, 27, 28, 0]])
    with torch.no_grad():
        expected = on_cpu(src, tgt)
        got = on_gpu(src.cuda(), tgt.cuda())
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), expected, atol=1e-4, rtol=1e-4)
    cpu_tokens = greedy_decode(on_cpu, src, 12)
    gpu_tokens = greedy_decode(on_gpu, src.cuda(), 12)
    assert torch.equal(gpu_tokens.cpu(), cpu_tokens)


# decoding a checkpoint on the GPU


@cuda
@pytest.mark.slow  # trains a model
def test_a_checkpoint_trained_on_cuda_decodes_on_cuda_as_on_the_cpu(cuda_run, capsys):
    checkpoint = str(cuda_run / "checkpoints" / "best_model.pt")
    printed = {}
    for device in ("cuda", "cpu"):
        argv = ["--checkpoint", checkpoint, "--source", "abcd", "--device", device]
        code, out, err = main_in_process(argv, capsys)
        assert code == 0, err[-3000:]
        assert out.strip(), err[-3000:]
        printed[device] = out
    assert printed["cuda"] == printed["cpu"]
    code, out, err = main_in_process(
        ["--checkpoint", checkpoint, "--source", "abcd", "--device", "cuda", "--beam_size", "3"], capsys
    )
    assert code == 0 and out.strip(), err[-3000:]


# the GPU check itself (runs anywhere)


def test_gpu_check_is_executable_bash_with_valid_syntax():
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    assert GPU_CHECK.stat().st_mode & 0o111, "benchmarks/gpu_check.sh is not executable"
    checked = subprocess.run(["bash", "-n", str(GPU_CHECK)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.slow  # starts bash, and python to import torch
def test_gpu_check_without_a_gpu_says_so_in_one_line_and_runs_nothing(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    if HAS_CUDA:
        pytest.skip("this machine has a CUDA GPU")
    # from another folder: the script finds the repository from its own path
    done = subprocess.run(["bash", str(GPU_CHECK)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.splitlines() == [NO_GPU_LINE], done.stderr
    assert list(tmp_path.iterdir()) == []
