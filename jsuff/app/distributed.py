"""Several processes (on one host or many) running one study together, through ``jax.distributed``.

Every process runs :func:`jsuff.app.study.run_study` with the same config and output folder and
its own :class:`Processes` (from :func:`connect`). The study's units of work are shared out by
their place in a fixed list (:meth:`Processes.share`: unit ``k`` goes to process ``k mod N``), so
who does what depends only on the study, never on timing; each process writes its own units,
atomically, into the shared output folder. Process 0 (the *leader*) holds the folder's lock, reads
the data, and after a barrier computes the tables; the other processes check that the lock they
see is their run's (so the folder really is shared, and a foreign run is refused).

Every step ends with an agreement (:meth:`Processes.step`): if any process fails in it, every
process stops with that error, naming the process. A process that dies (killed, out of memory)
stops the others at the next agreement; the units written so far are kept, and rerunning the study
with ``--resume`` (with any number of processes) finishes it with the same results. Barriers and
messages go through the coordination service that ``jax.distributed`` starts in process 0 (its
key-value store and barriers), not through device collectives, so a process may wait for hours
for a slower one.

Example:
    >>> p = Processes(index=1, count=3)
    >>> p.share(range(8)), p.leader
    ([1, 4, 7], False)
    >>> with SINGLE.step("checks"):   # one process: a step is just its block
    ...     pass
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from jsuff._files import LOCK_NAME
from jsuff.app.config import StudyError

__all__ = ["BARRIER_TIMEOUT_S", "SINGLE", "Processes", "check_shared_folder", "connect", "new_run_id"]

T = TypeVar("T")

#: How long a process waits at a barrier for the slowest one (a week: units are shared evenly, but
#: hosts differ in speed). A process that dies is noticed much sooner, by its missing heartbeats.
BARRIER_TIMEOUT_S = 7 * 24 * 3600


@dataclasses.dataclass(frozen=True)
class Processes:
    """This process's place among the ``count`` processes of a study (``index`` 0 leads)."""

    index: int = 0
    count: int = 1
    # numbers the barriers (every process passes the same ones in the same order)
    _calls: Iterator[int] = dataclasses.field(default_factory=itertools.count, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise StudyError(f"process index {self.index} is not in 0..{self.count - 1}")

    @property
    def leader(self) -> bool:
        """Whether this is process 0 (the lock, the data, the tables)."""
        return self.index == 0

    def share(self, units: Iterable[T]) -> list[T]:
        """The units of ``units`` (in a fixed order) that this process does: every ``count``-th
        from its ``index``."""
        return list(units)[self.index :: self.count]

    def gather(self, text: str) -> list[str]:
        """Every process's ``text``, in process order, once every process has sent its own (a
        barrier). Waits up to :data:`BARRIER_TIMEOUT_S` for the slowest process.

        Raises:
            StudyError: another process stopped (JAX's coordination service notices a process
                that stops sending heartbeats), or the wait timed out.
        """
        if self.count == 1:
            return [text]
        n = next(self._calls)
        client = _client()
        try:
            client.key_value_set(f"jsuff/{n}/{self.index}", text)
            client.wait_at_barrier(f"jsuff/{n}", BARRIER_TIMEOUT_S * 1000)
            return [client.blocking_key_value_get(f"jsuff/{n}/{i}", 60_000) for i in range(self.count)]
        except Exception as e:  # a process that died: the coordination service fails the barrier
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StudyError(
                f"process {self.index} of {self.count}: another process of this study stopped ({first}). "
                "The units finished so far are kept: rerun the study with --resume to finish it."
            ) from None

    def broadcast(self, text: str) -> str:
        """The leader's ``text``, on every process (a barrier too)."""
        return self.gather(text)[0]

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run the block on every process, then agree: when it failed on any process, it fails on
        every one (this process's own error is raised unchanged; another's as a :class:`StudyError`
        naming the process and the step). With one process it is just the block."""
        if self.count == 1:
            yield
            return
        try:
            yield
        except Exception as e:
            self._agree(name, f"{type(e).__name__}: {e}")
            raise
        self._agree(name, "")

    def _agree(self, name: str, error: str) -> None:
        errors = self.gather(error)
        failed = [(i, msg) for i, msg in enumerate(errors) if msg]
        if failed and not error:
            i, msg = failed[0]
            raise StudyError(f"process {i} of {self.count} failed in the study's {name} step: {msg}")


SINGLE = Processes()


def _client():
    """JAX's coordination-service client of this process (what ``jax.distributed`` connected;
    orbax's multi-host checkpointing uses it the same way)."""
    from jax._src import distributed

    if distributed.global_state.client is None:
        raise StudyError("this process has not joined the study's processes (jsuff.app.distributed.connect)")
    return distributed.global_state.client


def connect(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
            *, heartbeat_timeout: int = 100) -> Processes:
    """Join the study's processes with ``jax.distributed.initialize`` (before JAX is used).

    Args:
        coordinator: process 0's ``HOST:PORT`` (every process passes the same); ``None`` with no
            other argument lets JAX detect the cluster (SLURM, Open MPI, a TPU pod slice).
        num_processes, process_id: the number of processes and this one's index (0 hosts the
            coordinator).
        heartbeat_timeout: seconds after which a silent process counts as dead and the others
            stop (JAX's default, 100).

    Raises:
        StudyError: the arguments do not fit, or the processes could not be joined (the message
            says how to start them).
    """
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise StudyError("--coordinator, --num-processes and --process-id go together: give all three "
                         "(or --distributed alone to let JAX detect SLURM, Open MPI or a TPU pod slice)")
    if num_processes is not None and (num_processes < 1 or not 0 <= process_id < num_processes):  # type: ignore[operator]
        raise StudyError(f"--process-id must be in 0..{num_processes - 1} for --num-processes {num_processes}, "
                         f"got {process_id}")
    import jax

    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, heartbeat_timeout_seconds=heartbeat_timeout)
    except (RuntimeError, ValueError) as e:
        where = coordinator or "the cluster environment (nothing was detected)"
        raise StudyError(
            f"cannot join the study's processes through {where}: {str(e).rstrip('.')}. Start every process with the same "
            "--coordinator HOST:PORT (process 0's host) and --num-processes N, each with its own --process-id, "
            "or run under SLURM, Open MPI or on a TPU pod slice with --distributed."
        ) from None
    return Processes(index=jax.process_index(), count=jax.process_count())


def new_run_id() -> str:
    """A random identity for one run of a study (recorded in the folder's lock by the leader)."""
    return secrets.token_hex(8)


def check_shared_folder(folder: Path, run_id: str, processes: Processes) -> None:
    """A process other than the leader checks that ``folder``'s lock is held by its own run: the
    folder is shared with process 0 (it sees process 0's lock) and no foreign run holds it.

    Raises:
        StudyError: the lock is missing (the folder is not shared) or records another run.
    """
    lock = Path(folder) / LOCK_NAME
    try:
        record = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get("run") != run_id:
        seen = "no lock file" if record is None else f"a lock of another run ({_describe(record)})"
        raise StudyError(
            f"process {processes.index} of {processes.count} sees {seen} in {folder}, where process 0 locked it "
            f"for run {run_id}: every process must see the same output folder (a shared file system), and it "
            "must not be in use by another study"
        )


def _describe(record: object) -> str:
    if not isinstance(record, dict):
        return "unreadable"
    return f"process {record.get('pid', '?')} on {record.get('host', '?')}, run {record.get('run', 'none')}"

