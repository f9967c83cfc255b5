"""The process group of a ``torchrun`` job, and the few collective decisions oodflow needs.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`session` reads them, starts the group (gloo on the CPU, NCCL on CUDA) and ends it. Without
them every helper here is the identity of one process, so the same code runs either way.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from ood_flow import errors
from ood_flow.errors import OodflowError

TIMEOUT_ENV = "OODFLOW_DIST_TIMEOUT"
"""Seconds a process waits for the others in one collective before it gives up (default 300)."""
THREADS_ENV = "OODFLOW_THREADS"
"""Threads per process (default under torchrun: the usable cores shared out among the node's processes)."""
DEFAULT_TIMEOUT = 300.0


class DistributedError(OodflowError):
    """Another process of the job stopped, failed or could not be reached (exit 1)."""


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the job: ``world`` processes, this one ``rank``.

    Attributes:
        world, rank, local_rank: the job's size, this process's place, and its place on its node.
        backend: ``gloo`` or ``nccl``; None for a single process without a group.
        device: where collective tensors live (the CPU for gloo, this process's GPU for NCCL).
        side: a second group for the collectives inside a forward pass (synchronized batch norm,
            ActNorm's initialisation), so they never interleave with DDP's gradient reductions.
        threads: the intra-op threads this process uses, when set here.
    """

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None
    device: str = "cpu"
    side: Any = None
    threads: int | None = None

    @property
    def active(self) -> bool:
        """True inside a process group (even of one process)."""
        return self.backend is not None

    @property
    def writer(self) -> bool:
        """Only rank 0 writes files and logs."""
        return self.rank == 0

    def flags(self, *values: bool) -> list[bool]:
        """Each flag OR-ed over all processes (one small all-reduce)."""
        if not self.active:
            return [bool(v) for v in values]
        t = torch.tensor([int(bool(v)) for v in values], dtype=torch.int32, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def sum(self, values: torch.Tensor, group: Any = None) -> torch.Tensor:
        """``values`` summed over all processes (a new tensor on ``values``' device)."""
        if not self.active:
            return values.clone()
        t = values.detach().to(self.device, copy=True)
        dist.all_reduce(t, group=group)
        return t.to(values.device)

    def gather(self, obj: Any) -> list:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.active:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def agree(self, fn: Callable[[], Any], writer_only: bool = False) -> Any:
        """``fn()`` (on rank 0 only with ``writer_only``); when it fails on any process, every process raises
        that failure, so a bad input ends the whole job with the same one-line error and exit code."""
        result, failure = None, None
        if self.writer or not writer_only:
            try:
                result = fn()
            except OodflowError as exc:
                failure = exc
        if not self.active:
            if failure is not None:
                raise failure
            return result
        reports = self.gather(None if failure is None else (*failure.relayed(), str(failure)))
        first = next((r for r in reports if r is not None), None)
        if failure is not None:
            raise failure
        if first is not None:
            raise _rebuilt(*first)
        return result


SINGLE = Dist()
"""One process, no group."""


def _rebuilt(name: str, args: tuple, kwargs: dict, message: str) -> OodflowError:
    """Another process's error (:meth:`~ood_flow.errors.OodflowError.relayed`, and its message) as this process
    raises it: the same class, message and exit code where it is one of :mod:`ood_flow.errors` (a failed gate
    excepted: its result stays with the process that computed it), else a :class:`DistributedError` saying it."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, OodflowError) and cls is not errors.GateFailed:
        try:
            return cls(*args, **kwargs)
        except TypeError:  # a class whose arguments are not what it relayed: its message still says what failed
            pass
    return DistributedError(message)


def launched() -> bool:
    """Whether this process was started by torchrun (or anything that sets its variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def writes_files() -> bool:
    """Whether this process writes a job's files: the only process, or rank 0 of the job (of a running process
    group, else of torchrun's variables, so it holds after a :func:`session` has ended)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def timeout() -> float:
    """Seconds of :data:`TIMEOUT_ENV`, checked."""
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT))
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise errors.UsageError(f"{TIMEOUT_ENV}={text!r}: give a positive number of seconds")
    return value


def _threads(local_world: int) -> int:
    text = os.environ.get(THREADS_ENV)
    if text is not None:
        if not text.isdigit() or int(text) < 1:
            raise errors.UsageError(f"{THREADS_ENV}={text!r}: give a whole number of threads, at least 1")
        return int(text)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(local_world, 1))


@contextlib.contextmanager
def session(device: str) -> Iterator[Dist]:
    """The job's :class:`Dist` while the block runs: a process group started from torchrun's variables
    (gloo for ``cpu``, NCCL for ``cuda``) and ended afterwards, or :data:`SINGLE` outside torchrun.

    A group that is already running (a script that started its own) is used and left running.
    Threads per process are set explicitly under torchrun (which sets ``OMP_NUM_THREADS=1``).
    """
    if not launched() and not dist.is_initialized():
        threads = _threads(1) if os.environ.get(THREADS_ENV) is not None else None
        if threads is not None:
            torch.set_num_threads(threads)
        yield SINGLE if threads is None else Dist(threads=threads)
        return
    started = not dist.is_initialized()
    if started:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout()))
    try:
        yield _describe()
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


def _describe() -> Dist:
    backend = dist.get_backend()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
    threads = _threads(local_world)
    torch.set_num_threads(threads)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local_rank}" if backend == "nccl" else "cpu"
    side = dist.new_group(backend=backend)
    return Dist(dist.get_world_size(), dist.get_rank(), local_rank, backend, device, side, threads)
