"""Multi-process helpers: ``torchrun`` sets RANK/WORLD_SIZE; without it everything is one process.

NCCL is used on CUDA, gloo on CPU (so DDP is testable on a laptop with ``torchrun --nproc_per_node=2``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device | None = None) -> DistInfo:
    """Join the process group when launched by ``torchrun``; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_nccl = device is not None and device.type == "cuda"
        if use_nccl:
            torch.cuda.set_device(_gpu_of(local))
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def _gpu_of(local_rank: int) -> int:
    """The GPU of a local rank: one each, shared round-robin when there are more ranks than GPUs."""
    return local_rank % max(torch.cuda.device_count(), 1)


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """One GPU per local rank under torchrun (round-robin with more ranks than GPUs); CPU stays CPU."""
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", _gpu_of(info.local_rank))
    return device


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def die_with_parent(worker_id: int = 0) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux; a no-op elsewhere).

    Used as every DataLoader's ``worker_init_fn``: a step killed with ``kill -9`` leaves no
    orphaned decoding workers behind.
    """
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
