"""Data-parallel training on PyTorch's own engine: ``torchrun`` starts the processes,
``torch.distributed`` connects them, ``DistributedDataParallel`` averages the gradients.

    torchrun --nproc_per_node=N -m lightship train ...          # one machine, N processes
    torchrun --nnodes=2 --node_rank=R --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:PORT --nproc_per_node=N -m lightship train ...   # multi-node

``train.batch_size`` is the batch of one process; the global batch is world × batch_size (the
linear LR scaling rule sees the global batch). Rank r takes the r-th block of every global batch
of the epoch permutation, so together the ranks see exactly the single-process epoch with the
global batch. Only rank 0 creates the run folder and writes metrics, checkpoints and weights;
logged losses and accuracies are averaged over ranks. Backend: NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lightship.errors import UserError


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, values: list[float], device: torch.device) -> list[float]:
        """Average numbers over ranks (one all-reduce); identity in one process."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return (t / self.size).tolist()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Average gradients over ranks in one all-reduce (what DDP does, without its bucketing):
        used for methods whose partners share layers with the student, where two DDP wrappers
        would reduce a shared parameter twice. A missing gradient counts as zeros."""
        if not self.active or not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def sync_buffers(self, modules: list[torch.nn.Module]) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank."""
        if not self.active:
            return
        for m in modules:
            for b in m.buffers():
                dist.broadcast(b, src=0)

    def share(self, value):
        """Rank 0's value of a picklable object on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world(device_setting: str) -> tuple[World, str]:
    """Join the process group torchrun set up (if any); return the world and this rank's device.

    With ``device: auto`` on GPUs each process takes ``cuda:LOCAL_RANK``.
    """
    if not launched_by_torchrun():
        return World(), device_setting
    size = int(os.environ["WORLD_SIZE"])
    rank, local = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available() and device_setting in ("auto", "cuda") or (
        device_setting.startswith("cuda"))
    if cuda:
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs; "
                            "lower --nproc_per_node")
        torch.cuda.set_device(local)
        device_setting = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return World(rank=rank, size=size, local_rank=local), device_setting


def close_world(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()
