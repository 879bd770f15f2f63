"""Data-parallel training on PyTorch's own engine: `torchrun` starts one process per device, each
process joins the group, and DistributedDataParallel averages the gradients.

The global batch (--batch-size) stays the same whatever the number of processes: rank r takes the
examples r, r + N, r + 2N, ... of it, and the same slice of the noise and timesteps drawn for the whole
batch. So N processes take the same steps as one process (up to the order of float sums), and a run
can be resumed with another number of processes.
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from diffkit.errors import SettingError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """The process that writes checkpoints, metrics, previews and logs."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.size


def resolve_device(wanted: str = "auto") -> torch.device:
    """auto (CUDA where there is one, else the CPU), cpu, cuda or cuda:N; under torchrun a bare cuda is
    this process's own GPU. On CUDA, TF32 tensor cores serve what runs outside bf16 autocast (fp32 runs,
    the optimiser's matmuls)."""
    name = ("cuda" if torch.cuda.is_available() else "cpu") if wanted == "auto" else wanted
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SettingError("device", f": unknown device {wanted!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingError("device", f" {wanted}: no CUDA device is available here")
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank())
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return device


def join() -> World:
    """Join the process group torchrun describes in the environment (once); a plain run is World(0, 1).
    gloo carries CPU tensors and NCCL CUDA ones, so --device cpu works on a GPU machine too."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        # Left to the interpreter's teardown, the backends' threads can be destroyed still running, and
        # the process then aborts (SIGABRT) after its work is done: torchrun reports the job failed.
        atexit.register(_leave)
    return current()


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def current() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def local_rank() -> int:
    """This process's device index on its machine."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def mean(value: float, world: World) -> float:
    """The mean of a number over all processes."""
    if world.size == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return total.item() / world.size


def total(values: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of a (CPU) tensor over all processes."""
    if world.size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values


def any_true(flag: bool, world: World) -> bool:
    """True on every process if it is true on any (a stop signal that reached only some of them)."""
    if world.size == 1:
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def from_main(value, world: World):
    """The main process's value of a picklable object, on every process (trusted: our own processes)."""
    if world.size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
