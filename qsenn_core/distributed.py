"""torchrun / DistributedDataParallel helpers: one process per device, only rank 0 writes.

A stage with ``train.nproc > 1`` re-launches itself through ``python -m torch.distributed.run``
(:func:`maybe_relaunch`); every child then calls :func:`init_distributed`, which joins the process
group (NCCL on CUDA, gloo on CPU) from the environment torchrun sets. Multi-node runs start the
stage under ``torchrun --nnodes ...`` directly; :func:`maybe_relaunch` then does nothing.
Outside torchrun every helper degrades to the single-process case (rank 0 of 1).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from qsenn_core.params import Params
from qsenn_core.stage import run_stage

log = logging.getLogger(__name__)

#: Environment variables that torchrun sets in every child process.
_TORCHRUN_ENV = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")


def under_torchrun() -> bool:
    """True inside a process started by torchrun (``torch.distributed.run``)."""
    return all(name in os.environ for name in _TORCHRUN_ENV)


def is_distributed() -> bool:
    """True when a process group with more than one process is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """Rank within this node, from torchrun's ``LOCAL_RANK`` (0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on the process that writes outputs and logs (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def maybe_relaunch(nproc: int, argv: Sequence[str]) -> int | None:
    """Re-run ``argv`` (a script and its arguments) under torchrun with ``nproc`` processes.

    Returns the exit code of the torchrun child when it re-launched (the caller exits with it),
    or ``None`` when the caller should just go on: ``nproc == 1`` or already under torchrun.
    Typical use in a stage: ``if (code := maybe_relaunch(p.train.nproc, sys.argv)) is not None:
    sys.exit(code)``.
    """
    if nproc <= 1 or under_torchrun():
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *argv]
    log.info("re-launching under torchrun with %d processes", nproc)
    return subprocess.run(cmd, check=False).returncode


def init_distributed(device: torch.device) -> torch.device:
    """Join the torchrun process group, if any; return the device this process computes on.

    On CUDA each process takes ``cuda:LOCAL_RANK`` and the NCCL backend, on CPU gloo. Without
    torchrun (or with a world size of 1) nothing is initialized and ``device`` is returned.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        log.info("rank %d of %d joined the process group on %s", rank(), world_size(), device)
    return device


def cleanup_distributed() -> None:
    """Leave the process group (no-op when none is initialized)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """Wrap ``model`` in DistributedDataParallel when distributed, else return it unchanged."""
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(values: Tensor) -> Tensor:
    """Sum ``values`` over all processes (returned unchanged when not distributed)."""
    if is_distributed():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every process.

    DDP broadcasts buffers at the start of each forward, so after the last training step of an
    epoch every rank holds its own running statistics; this makes them identical again.
    """
    if not is_distributed():
        return
    for buffer in unwrap(model).buffers():
        dist.broadcast(buffer.data, src=0)


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every process (``obj`` itself when not distributed)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def run_distributed_stage(main: Callable[[argparse.Namespace, Params], None],
                          parser: argparse.ArgumentParser,
                          argv: Sequence[str] | None = None) -> int:
    """:func:`qsenn_core.stage.run_stage` for a training stage: with ``train.nproc > 1`` the
    script re-runs itself under torchrun (DistributedDataParallel) and returns that run's exit
    code; the process group is left after ``main``."""
    return run_stage(main, parser, argv,
                     relaunch=lambda params, args: maybe_relaunch(params.train.nproc, args),
                     cleanup=cleanup_distributed)
