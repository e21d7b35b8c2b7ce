"""Training on several processes, GPUs or machines with PyTorch's own engine: ``torchrun`` + DDP.

``torchrun`` starts one process (a *rank*) per device and gives each ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``. The LoopExpose trainer (:func:`loopexpose.methods.loopexpose.train.run`) uses
the handful of helpers here:

* :func:`setup` joins the process group (``nccl`` on CUDA, ``gloo`` on CPU) and picks the rank's device;
  without torchrun (or with one process) it does nothing and training is the plain single-process loop;
* :class:`ShardedBatchSampler` gives every rank its slice of every *global* batch: all ranks build the same
  list of batches from ``(seed, epoch)`` (so each step has one window length ``k`` everywhere and the batches
  stack), and rank ``r`` takes items ``r * B/N .. (r + 1) * B/N`` of each. The global batch is
  ``train.brackets_per_step`` whatever the number of ranks, so N ranks take the same steps as one;
* :func:`wrap` puts the model in :class:`~torch.nn.parallel.DistributedDataParallel`, which averages gradients
  over ranks in ``backward``. The networks have no batch statistics and every loss is a mean over equal-sized
  per-rank batches, so the averaged gradient is the one-rank gradient of the whole global batch;
* :func:`average` averages logged numbers over ranks; :func:`assert_in_sync` checks that every rank holds
  bit-identical weights, :func:`assert_same_start` that every rank resumes at the same epoch;
* :func:`autocast_dtype` picks mixed precision on CUDA (bf16 where the GPU has it, else fp16).

Randomness: data augmentation draws from per-item generators seeded by ``(seed, epoch, index)``
(:func:`loopexpose.data.item_generator`), so an item is the same on whichever rank or worker loads it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from loopexpose.errors import LoopExposeError
from loopexpose.models import resolve_device


@dataclass(frozen=True)
class Context:
    """Where this process stands: its global ``rank``, its ``local_rank`` on this machine, the number of
    ranks ``world_size`` and its ``device``. ``owns_group``: :func:`setup` started the process group (so
    :func:`teardown` ends it)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints, logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | torch.device = "cpu") -> Context:
    """Join the torchrun process group, if any, and choose this rank's device.

    Args:
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``. Under torchrun with CUDA each rank takes
            ``cuda:LOCAL_RANK`` (the ``N`` of ``cuda:N`` is ignored).
    Returns:
        A :class:`Context`; ``world_size == 1`` (and no process group) when not started by torchrun or
        started with a single process.
    """
    device = resolve_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(rank=rank, local_rank=local_rank, world_size=world_size, device=device, owns_group=owns)


def teardown(context: Context) -> None:
    """Leave the process group if :func:`setup` joined it."""
    if context.owns_group and dist.is_initialized():
        cuda = context.device.type == "cuda"
        dist.barrier(device_ids=[context.device.index] if cuda else None)  # leaving early can abort a peer (gloo)
        dist.destroy_process_group()


def barrier(context: Context) -> None:
    """Wait until every rank gets here (no-op in one process), e.g. while rank 0 writes files they all read."""
    if context.distributed:
        cuda = context.device.type == "cuda"
        dist.barrier(device_ids=[context.device.index] if cuda else None)


def wrap(model: torch.nn.Module, context: Context) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when there are several ranks, else ``model`` itself.

    DDP copies rank 0's weights to every rank when it is built and averages gradients in ``backward``.
    """
    if not context.distributed:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


class ShardedBatchSampler(Sampler[list]):
    """This rank's slice of every batch of a batch sampler whose batches are the same on every rank.

    Args:
        batch_sampler: yields global batches (e.g. :class:`loopexpose.data.BucketBatchSampler` with
            ``drop_last=True``, batch size ``B``); it must yield the same batches on every rank, which a
            sampler seeded by ``(seed, epoch)`` does.
        rank, world_size: this rank and the number of ranks ``N``; ``B`` must be a multiple of ``N``.

    Each rank yields ``B / N`` items per step and as many steps as ``batch_sampler``.

    >>> list(ShardedBatchSampler([[0, 1, 2, 3], [4, 5, 6, 7]], rank=1, world_size=2))
    [[2, 3], [6, 7]]
    """

    def __init__(self, batch_sampler, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        batch_size = getattr(batch_sampler, "batch_size", None)
        if batch_size is not None and batch_size % world_size:
            raise LoopExposeError(
                f"train.brackets_per_step ({batch_size}) must be a multiple of the number of ranks ({world_size})"
            )
        self.batch_sampler = batch_sampler
        self.rank = rank
        self.world_size = world_size

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list]:
        for batch in self.batch_sampler:
            if len(batch) % self.world_size:
                raise LoopExposeError(
                    f"a batch of {len(batch)} items cannot be split over {self.world_size} ranks (use drop_last)"
                )
            share = len(batch) // self.world_size
            yield batch[self.rank * share : (self.rank + 1) * share]

    def __len__(self) -> int:
        return len(self.batch_sampler)


def average(values: dict[str, float], context: Context) -> dict[str, float]:
    """The mean of each value over ranks (the same dict on every rank); unchanged with one rank."""
    if not context.distributed or not values:
        return values
    names = list(values)  # built in the same order on every rank
    tensor = torch.tensor([values[n] for n in names], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return {n: float(v) / context.world_size for n, v in zip(names, tensor.tolist())}


def parameter_digest(model: torch.nn.Module) -> int:
    """A 63-bit integer fingerprint of a model's parameters (names, shapes, dtypes and exact bytes)."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "big") >> 1


def gather_int(value: int, context: Context) -> list[int]:
    """Every rank's ``value`` (a signed 64-bit integer), rank 0 first; ``[value]`` with one rank."""
    if not context.distributed:
        return [value]
    gathered = [torch.zeros(1, dtype=torch.int64, device=context.device) for _ in range(context.world_size)]
    dist.all_gather(gathered, torch.tensor([value], dtype=torch.int64, device=context.device))
    return [int(t.item()) for t in gathered]


def assert_same_start(epoch: int, context: Context, out_dir) -> None:
    """Check that every rank resumes at the same epoch: ``--resume`` needs the run folder (written by rank 0)
    where every node can read it.

    Raises:
        LoopExposeError: the ranks found different checkpoints (or some none).
    """
    epochs = gather_int(epoch, context)
    if len(set(epochs)) != 1:
        raise LoopExposeError(
            f"ranks would resume at different epochs {epochs}: put the run folder on storage every node sees",
            out_dir,
        )


def assert_in_sync(model: torch.nn.Module, context: Context) -> list[int]:
    """Gather every rank's :func:`parameter_digest`; raise if they differ (DDP went wrong).

    Returns:
        The digests, rank 0 first (one item with one rank).
    Raises:
        LoopExposeError: ranks hold different weights.
    """
    digests = gather_int(parameter_digest(model), context)
    if len(set(digests)) != 1:
        raise LoopExposeError(f"ranks ended with different weights (digests {[f'{d:x}' for d in digests]})")
    return digests


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Mixed-precision type for the network's forward pass: ``None`` on CPU or when disabled (full float32,
    deterministic), bf16 on CUDA GPUs that support it (Ampere and newer), else fp16 (needs a GradScaler)."""
    if device.type != "cuda" or not enabled:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
