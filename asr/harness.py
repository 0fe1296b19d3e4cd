"""The training run's harness: its place in a torchrun job, its random generators, and stop signals.

None of this is the training step; `asr.train` calls it around the step so that a run can be spread over
processes, stopped at any moment and resumed exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from asr.errors import AsrError
from asr.recognizer import choose_device


@dataclass
class Distributed:
    """This process's place in a torchrun job; one process, rank 0 of 1, without torchrun."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (picklable objects, through the process group)."""
        if self.world_size == 1:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank, so that ranks on machines without a shared folder read the same."""
        if self.world_size == 1:
            return value
        box = [value if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather_numbers(self, numbers: list[float], device: torch.device) -> list[list[float]]:
        """Every rank's ``numbers``, in rank order, through one collective (a step's stop flag and counts)."""
        local = torch.tensor(numbers, dtype=torch.float64, device=device)
        if self.world_size == 1:
            return [local.tolist()]
        gathered = torch.empty(self.world_size * len(numbers), dtype=torch.float64, device=device)
        torch.distributed.all_gather_into_tensor(gathered, local)
        return gathered.view(self.world_size, len(numbers)).tolist()

    def check_same(self, what: str, digest: str) -> None:
        """Stop with an error unless every rank computed the same ``digest`` of ``what``."""
        digests = self.all_gather(digest)
        if len(set(digests)) > 1:
            raise AsrError(f"the {self.world_size} processes disagree on {what} ({', '.join(digests)}): "
                           f"check that every machine runs the same versions of asr, torch and librosa on the same data")


def start_distributed(device_name: str | None) -> tuple[Distributed, torch.device]:
    """Join the torchrun job described by the environment, if any: NCCL between GPUs, gloo between CPU processes.

    torchrun sets WORLD_SIZE, RANK and LOCAL_RANK (and where to rendezvous); each process drives one GPU.
    """
    device = choose_device(device_name)
    if "LOCAL_RANK" not in os.environ:  # not started by torchrun
        return Distributed(), device
    if device.type == "cuda":
        device = torch.device("cuda", cuda_index(int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()))
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(torch.distributed.get_rank(), torch.distributed.get_world_size()), device


def cuda_index(local_rank: int, visible_gpus: int) -> int:
    """The GPU a process drives: ``cuda:LOCAL_RANK`` when it sees the node's GPUs, ``cuda:0`` when a scheduler
    gives each process a GPU of its own through CUDA_VISIBLE_DEVICES."""
    if local_rank < visible_gpus:
        return local_rank
    if visible_gpus == 1:
        return 0
    raise AsrError(f"process {local_rank} on this machine sees {visible_gpus} GPUs: start at most one process per "
                   f"GPU, or give each process one GPU with CUDA_VISIBLE_DEVICES")


def random_states() -> dict[str, Any]:
    """Every random generator the training process draws from (dropout, SpecAugment, ...), as plain lists,
    which both ``torch.load(weights_only=True)`` and the process group's object exchange accept.

    Only the current GPU's generator: a run resumed on a machine with fewer GPUs must still find its own.
    """
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state().tolist(),
            "cuda": torch.cuda.get_rng_state().tolist() if torch.cuda.is_available() else [],
            "python": random.getstate(), "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]}


def set_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(states["cuda"], dtype=torch.uint8))
    random.setstate(states["python"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def seed_rank(seed: int, ddp: Distributed, step: int = 0) -> None:
    """A random stream of its own for each rank (dropout, SpecAugment), at the start of a run or, when a run is
    resumed with another process count, from the step it resumes at."""
    torch.manual_seed(seed + ddp.rank + ddp.world_size * step)


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT and SIGTERM (sent to the whole process group by Ctrl-C or a job
    scheduler) to the training process, which checkpoints and then shuts them down itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class TrainingInterrupted(AsrError):
    """SIGINT or SIGTERM arrived; a checkpoint was written first. The exit status is the shell's 128 + signal."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_status = 128 + signal_number


@dataclass
class StopRequest:
    """The signal (SIGINT or SIGTERM) that asked the run to stop, if one has arrived."""

    signal_number: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal_number or signal.SIGTERM).name


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Turn SIGINT and SIGTERM into a request the loop sees at the next step boundary."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signals can only be caught there
        yield request
        return

    def record(number: int, frame: Any) -> None:
        request.signal_number = request.signal_number or number

    previous = {number: signal.signal(number, record) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def parameter_digest(model: torch.nn.Module) -> str:
    """A hash of every weight's bytes: equal digests, bit-identical models."""
    digest = hashlib.sha1()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_identical_weights(model: torch.nn.Module, ddp: Distributed, epoch: int) -> str:
    """After an epoch under torchrun: batch norm statistics made rank 0's (as DDP hands them out before each
    forward), then every rank's weights compared by digest; returns the digest."""
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer, src=0)
    digests = ddp.all_gather(parameter_digest(model))
    if len(set(digests)) > 1:
        raise AsrError(f"the {ddp.world_size} processes' weights diverged during epoch {epoch}")
    return digests[0]
