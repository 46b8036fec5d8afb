"""Several training processes through accelerate: what :func:`mimetic.training.sft.train` needs of them.

``mimetic train --processes N`` (or ``accelerate launch … -m mimetic train``, or ``torchrun``)
starts N copies of the training loop. accelerate's ``Accelerator`` then sets up the process
group (gloo on CPUs, NCCL on CUDA GPUs) and wraps the model in DDP, or FSDP / DeepSpeed when
its config file says so (``configs/accelerate/`` in the repository). Every process holds all of
the data; each optimizer step takes one *global* batch of ``batch_size × processes`` examples
and every process trains on its own slice of it, so a run on N processes follows the same
data order and, without dropout, the same loss curve as one process with an N times larger
batch (tested with 2 CPU processes in ``tests/test_distributed.py``).

A single process never touches accelerate or ``torch.distributed``: :class:`Dist` is then a set
of no-ops, and training is exactly the plain loop.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from mimetic.core.atomic import swap_in
from mimetic.models.hardware import usable_cpus
from mimetic.errors import MimeticError


def launched_processes() -> int:
    """How many processes the launcher started (``WORLD_SIZE``, set by torchrun / accelerate
    launch); 1 when run directly."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """True in the process that writes files and prints (rank 0), or when not launched."""
    return os.environ.get("RANK", "0") in ("0", "")


class Dist:
    """The collective operations of the training loop; no-ops in a single process.

    Args:
        device: ``cpu``, ``cuda`` or ``mps`` (from :func:`mimetic.models.loading.pick_device`). On CPU
            accelerate is asked for the CPU backend (gloo), since it would otherwise look for
            GPUs.
    """

    def __init__(self, device: str):
        self.world = launched_processes()
        self.acc: Any = None
        if self.world > 1:
            from accelerate import Accelerator

            self.acc = Accelerator(cpu=device == "cpu")
            self.world = self.acc.num_processes
        self.rank = self.acc.process_index if self.acc else 0
        self.main = self.rank == 0

    @property
    def sharded(self) -> bool:
        """FSDP or DeepSpeed: weights and optimizer state are split across processes."""
        return bool(self.acc) and self.acc.distributed_type.name in ("FSDP", "DEEPSPEED")

    def full_state_dict(self, model: Any) -> dict[str, Any] | None:
        """The whole model's state dict, gathered from the shards (call on every process; the
        main one gets it), or ``None`` when weights are not sharded (read them directly)."""
        return self.acc.get_state_dict(model) if self.sharded else None

    def save_state(self, dest: Path) -> None:
        """Sharded strategies: every process writes its part of weights, optimizer and RNG with
        accelerate's ``save_state`` into a temporary folder that then replaces ``dest``."""
        tmp = dest.with_name(dest.name + ".partial")
        self.acc.save_state(str(tmp))
        self.acc.wait_for_everyone()
        if self.main:
            swap_in(tmp, dest)
        self.acc.wait_for_everyone()

    def main_first(self) -> Any:
        """Context: the main process goes first (downloads, cache conversion), the others wait."""
        return self.acc.main_process_first() if self.acc else contextlib.nullcontext()

    def prepare(self, model: Any, optimizer: Any) -> tuple[Any, Any]:
        """Wrap model and optimizer for the launcher's strategy (DDP, FSDP, DeepSpeed)."""
        if not self.acc:
            return model, optimizer
        return self.acc.prepare(model, optimizer)

    def backward(self, loss: Any) -> None:
        if self.acc:
            self.acc.backward(loss)
        else:
            loss.backward()

    def no_sync(self, model: Any, skip: bool) -> Any:
        """Context that skips the gradient all-reduce (``skip``: a micro-batch that is not the
        last of an accumulated step)."""
        if self.acc and skip:
            return self.acc.no_sync(model)
        return contextlib.nullcontext()

    def clip_grad_norm_(self, model: Any, params: list[Any], max_norm: float) -> None:
        import torch

        if self.acc:
            self.acc.clip_grad_norm_(model.parameters(), max_norm)
        else:
            torch.nn.utils.clip_grad_norm_(params, max_norm)

    def unwrap(self, model: Any) -> Any:
        return self.acc.unwrap_model(model) if self.acc else model

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes (float64)."""
        if not self.acc:
            return list(values)
        import torch

        t = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        return self.acc.reduce(t, "sum").tolist()

    def min_int(self, value: int) -> int:
        """The smallest ``value`` over all processes."""
        if not self.acc:
            return value
        import torch
        import torch.distributed as td

        t = torch.tensor([value], dtype=torch.long, device=self.acc.device)
        td.all_reduce(t, op=td.ReduceOp.MIN)
        return int(t.item())

    def broadcast(self, obj: Any) -> Any:
        """The main process's ``obj`` on every process (picklable objects)."""
        if not self.acc:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj])[0]

    def gather(self, obj: Any) -> list[Any]:
        """``[obj of process 0, obj of process 1, …]`` on every process."""
        if not self.acc:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def wait(self) -> None:
        if self.acc:
            self.acc.wait_for_everyone()


def relaunch(processes: int, config_file: Path | None, argv: list[str]) -> int:
    """Run the ``mimetic`` command ``argv`` (the command line after the program name) again in
    ``processes`` processes through ``accelerate launch`` (torchrun underneath), without the
    options that asked for the launch; returns its exit status.

    Without ``config_file``: DDP on this machine's CPUs or GPUs (``--multi_gpu``), a free local
    port, the CPU threads split between the processes. The launcher's own report after a
    failure (torchrun log lines, a traceback) is filtered from stderr: the processes print
    their own two-line errors.

    Raises:
        MimeticError: ``config_file`` does not exist.
    """
    import socket
    import subprocess

    args, skip = [], False
    for a in argv:  # the command line minus the options that asked for the launch
        if skip:
            skip = False
        elif a in ("--processes", "--accelerate-config"):
            skip = True
        elif not a.startswith(("--processes=", "--accelerate-config=")):
            args.append(a)
    with socket.socket() as sock:  # a free port for the processes to meet on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", str(port), "--num_machines", "1"]
    if config_file:
        if not config_file.expanduser().is_file():
            raise MimeticError(f"No accelerate config file at {config_file}.", "See configs/accelerate/ in mimetic's repository.")
        cmd += ["--config_file", str(config_file.expanduser())]
        if processes > 1:
            cmd += ["--num_processes", str(processes)]
    else:
        threads = max(1, usable_cpus() // processes)
        cmd += ["--multi_gpu", "--num_processes", str(processes), "--mixed_precision", "no", "--dynamo_backend", "no",
                "--num_cpu_threads_per_process", str(threads)]
    proc = subprocess.Popen(cmd + ["-m", "mimetic", *args], stderr=subprocess.PIPE, text=True, errors="replace")
    hiding = False
    for line in proc.stderr or []:
        # The processes print their own errors (two lines, no traceback). What follows a failure
        # is the launcher's report (torchrun's log lines and a traceback of its own): not for writers.
        if line.startswith("Traceback (most recent call last)") or re.match(r"[EWI]\d{4} \d", line):
            hiding = True
        if not hiding and not line.startswith(("The following values were not passed", "\t`--", "To avoid this warning")):
            sys.stderr.write(line)
    return proc.wait()


def leave_process_group() -> None:
    """Leave the process group if this process joined one (at exit, so the launcher ends cleanly)."""
    import sys

    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()
