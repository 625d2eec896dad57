"""Training across processes (torchrun, accelerate launch): every process trains, rank 0 alone writes.

transformers' ``TrainingArguments`` joins the launcher's process group when it is built (gloo on
CPU, NCCL on CUDA, through accelerate's ``PartialState``). :class:`Processes` reads its answer
instead of parsing the launcher's environment variables, and gives the barrier that every process
passes before rank 0 writes the final files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from proxytool.errors import ProxyToolError


@dataclass(frozen=True)
class Processes:
    """The training processes as this one sees them.

    Attributes:
        count: How many processes train together (1 without a launcher).
        index: This process's rank; rank 0 prints, logs, saves and registers.
        backend: The collective backend (``gloo``, ``nccl``), None for one process.
        global_batch: Sequences per optimizer step over all processes
            (per-device batch × processes × gradient accumulation).
    """

    count: int
    index: int
    backend: str | None
    global_batch: int
    _state: object

    @property
    def main(self) -> bool:
        return self.index == 0

    def wait(self) -> None:
        """Barrier: no process goes on until all have got here (a no-op for one process)."""
        self._state.wait_for_everyone()

    def describe(self) -> dict:
        """The record kept in ``proxytool.json`` and shown when training starts."""
        return {"processes": self.count, "backend": self.backend, "global_batch": self.global_batch}


def processes(args) -> Processes:
    """The processes of a run, from its built ``TrainingArguments`` (which set up the process group).

    Raises:
        ProxyToolError: accelerate was asked for several processes but started only this one.
    """
    state = args.distributed_state
    count = args.world_size
    _check_launch(count)
    global_batch = args.per_device_train_batch_size * count * args.gradient_accumulation_steps
    return Processes(count, args.process_index, state.backend if count > 1 else None, global_batch, state)


def _check_launch(count: int) -> None:
    """``accelerate launch --num_processes 2`` on a CPU machine starts *one* process (its simple launcher;
    accelerate runs several CPU processes only through mpirun). It sets MASTER_ADDR only when asked for
    more than one process, so one process that sees it was meant to have company: refuse, rather than
    train alone with half the global batch."""
    simple_launcher = "ACCELERATE_USE_CPU" in os.environ and os.environ.get("MASTER_ADDR")
    if count == 1 and simple_launcher:
        raise ProxyToolError(
            "accelerate launch started a single process although more were asked for (with --cpu, or on a "
            "machine without GPUs, accelerate runs several processes only through mpirun): use "
            "`accelerate launch --multi_gpu --num_processes N -m proxytool train ...` (it runs N CPU processes "
            "when there is no GPU) or `torchrun --nproc_per_node N -m proxytool train ...`"
        )
