"""DDP under PyTorch's own launcher (torchrun): one process per device, NCCL on GPUs, gloo on CPU.

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`setup` reads them (a plain ``poserender train`` is a world of one and starts no process
group). Only rank 0 writes checkpoints, TensorBoard events and the metrics file.
"""
from __future__ import annotations

import dataclasses
import gc
import os
from typing import Optional

import torch
import torch.distributed as dist

from ..errors import UserError


@dataclasses.dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Average a small tensor of per-rank values (losses for the log) over all ranks."""
        if not self.distributed:
            return values
        values = values.detach().clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values / self.world_size

    def same_on_all_ranks(self, value: torch.Tensor) -> bool:
        """True when ``value`` (a checksum) is identical on every rank."""
        if not self.distributed:
            return True
        gathered = [torch.zeros_like(value) for _ in range(self.world_size)]
        dist.all_gather(gathered, value)
        return all(torch.equal(g, gathered[0]) for g in gathered)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r}; expected an integer (set by torchrun)") from None


def setup(device: str = "auto") -> DistContext:
    """Join the process group torchrun prepared (if any) and pick this process's device.

    ``device``: ``auto`` (CUDA device ``LOCAL_RANK`` when CUDA is available, else CPU),
    ``cpu``, or ``cuda``.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is usable here (see poserender doctor)")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s); "
                            "expected --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    backend = None
    if world > 1:
        backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                    device_id=dev if use_cuda else None)
    return DistContext(rank, local_rank, world, dev, backend)


def teardown(ctx: DistContext) -> None:
    """Leave the process group. Callers drop their DDP-wrapped models first: this collects
    them (they hold the group) so no gloo thread outlives the interpreter."""
    if ctx.distributed and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
