"""Data-parallel training over several processes with torch.distributed, started by torchrun.

    torchrun --nproc_per_node=N main.py --version pytorch ...

starts N copies of this program with RANK, LOCAL_RANK and WORLD_SIZE in the environment.
Each process keeps a full copy of the model (DistributedDataParallel), reads its own share
of every global batch (DistributedSampler), and DDP averages the gradients across processes
during backward, so every copy takes the same optimizer step and stays identical.

`--batch_size` is per process: the global batch is batch_size x N x gradient_accumulation_steps
examples. `--max_tokens` is per process too: each step takes N of the epoch's length-bucketed
batches, one per process (DistributedTokenBatchSampler). The DistributedSampler is the same
with one process (a world of size 1), so a run on N processes with batch B sees exactly the
batches a single process with batch N x B sees.
Only rank 0 writes files, logs and draws figures.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from utils.runtime.config import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """Where this process stands: rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device: torch.device, timeout_s: int = 300) -> World:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); no-op for one process.

    `timeout_s` bounds every collective: a rank that died leaves the others waiting at most
    that long before they fail too, instead of hanging forever.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        if torch.cuda.device_count() <= local_rank:
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    world = World(rank, size, local_rank)
    if not world.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # only rank 0 tells the story
    logger.info("distributed: %d processes, backend %s, this is rank %d", size, backend, rank)
    return world


def device_for(world: World, device: torch.device) -> torch.device:
    """Each process drives its own GPU; on the CPU they share the one device."""
    return torch.device("cuda", world.local_rank) if device.type == "cuda" else device


def shutdown(world: World) -> None:
    """Leave the process group of a torchrun world (one a library such as accelerate set up for a
    single process is left alone: it may be used again in this process)."""
    if world.distributed and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sampler(dataset: Dataset, world: World, seed: int, shuffle: bool = True) -> DistributedSampler:
    """Rank r reads indices perm[r::N] of one seeded permutation per epoch (call set_epoch)."""
    return DistributedSampler(dataset, num_replicas=world.size, rank=world.rank, shuffle=shuffle, seed=seed)


def sum_across(world: World, *values: float) -> list[float]:
    """Each value summed over all processes (a single all_reduce); unchanged for one process."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def tokens_per_replica(world: World, window_tokens: int, window_ok: bool = True) -> tuple[float, bool]:
    """What to divide a process's summed-loss gradients by for the global token mean, and whether
    every process's window was finite (one all_reduce for both).

    DDP averages gradients over N processes, so dividing each process's gradients by
    (global tokens / N) gives sum-over-all-tokens / global tokens: the same step one
    process would take on the whole global batch, however the tokens are spread.
    A NaN/inf loss on any process skips the step on all of them, so the copies stay identical.
    """
    total, bad = sum_across(world, float(window_tokens), float(not window_ok))
    return max(total, 1.0) / world.size, bad == 0


def agree_to_stop(world: World, stop) -> bool:
    """Whether any process was asked to stop (Ctrl-C / SIGTERM); all then stop after the same step.

    A signal delivered to one process only must not leave the others waiting in the next
    all_reduce: every process asks this at the same point of every step and gets the same answer.
    """
    if not world.distributed:
        return stop.requested
    flag = torch.tensor([stop.signum or 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() and stop.signum is None:
        stop.signum = int(flag.item())  # so this process reports the same signal and exit code
    return bool(flag.item())


def from_rank0(world: World, value: Any) -> Any:
    """Rank 0's `value` on every process (e.g. the evaluation record only rank 0 computed)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around the model when there are several processes.

    DDP broadcasts rank 0's weights at construction and all-reduces (averages) the gradients
    during backward. Keep the bare model (`unwrap`) for saving, decoding and tracing.
    """
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "no_sync") else model


def make_train_loader(dataset: Dataset, batch_size: int, world: World, seed: int, num_workers: int = 0,
                      max_tokens: int = 0, collate=None) -> DataLoader:  # fmt: skip
    """Shuffled batches of `batch_size` from `sampler`, or under torchrun with `max_tokens` from
    `token_batches` (call set_epoch(loader, epoch) each epoch). `collate` makes a batch (default:
    the pairs' utils.data.tasks.collate).

    The generator only seeds the DataLoader's workers; the order comes from (seed, epoch).
    """
    if collate is None:
        from utils.data.tasks import collate

    generator = torch.Generator().manual_seed(seed)
    if max_tokens:
        share = token_batches(dataset.src_lengths, dataset.tgt_lengths, max_tokens, world, seed)
        return DataLoader(dataset, batch_sampler=share, collate_fn=collate, generator=generator,
                          num_workers=num_workers)  # fmt: skip
    order = sampler(dataset, world, seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=order, collate_fn=collate,
                      generator=generator, num_workers=num_workers)  # fmt: skip


class EpochSampler(Sampler):
    """A DistributedSampler that moves to the next epoch by itself at each pass: for a loop that
    never calls set_epoch (the Trainer with our own DataLoader). Pass 1 is epoch `first`."""

    def __init__(self, inner: DistributedSampler, first: int = 1) -> None:
        self.inner, self.epoch = inner, first

    def __iter__(self):
        self.inner.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


class DistributedTokenBatchSampler(Sampler[list[int]]):
    """--max_tokens under torchrun: every process builds the same length-bucketed batches of the
    epoch (utils.data.batching.TokenBatchSampler, drawn from seed + epoch: call set_epoch) and
    takes every N-th one, starting at its rank. Like DistributedSampler, the list is padded by
    wrapping around to a multiple of N, so every process takes the same number of steps.

    An optimizer step then covers N batches of up to max_tokens tokens each: --max_tokens is per
    process, as --batch_size is, and the loss is still the mean over the global batch's tokens.
    """

    def __init__(self, batches, world: World, seed: int) -> None:
        self.inner, self.world, self.seed, self.epoch = batches, world, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        batches = self.inner.batches(torch.Generator().manual_seed(self.seed + self.epoch))
        batches += batches[: -len(batches) % self.world.size]
        return iter(batches[self.world.rank :: self.world.size])

    def __len__(self) -> int:
        return -(-len(self.inner) // self.world.size)

    def padding_ratio(self) -> float:
        return self.inner.padding_ratio()


def token_batches(src_lengths, tgt_lengths, max_tokens: int, world: World, seed: int) -> Sampler:
    """This process's share of each epoch's --max_tokens batches of examples with these lengths."""
    from utils.data.batching import TokenBatchSampler

    inner = TokenBatchSampler(src_lengths, tgt_lengths, max_tokens, shuffle=True)
    return DistributedTokenBatchSampler(inner, world, seed)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell a loader's DistributedSampler or DistributedTokenBatchSampler which epoch comes next;
    a single process's own samplers draw from the loader's generator instead and need nothing."""
    for order in (loader.sampler, loader.batch_sampler):
        if hasattr(order, "set_epoch"):
            order.set_epoch(epoch)
