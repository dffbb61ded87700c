"""Preemption: schedulers (SLURM, Kubernetes) send SIGTERM, or SIGUSR1 with ``sbatch --signal``, some seconds before
they kill a job. While training, these signals only raise a flag; the trainer finishes its current step, writes a
checkpoint at that step, and the process exits with :data:`PREEMPTED_EXIT`. The same command resumes from that step.

Data-loading worker processes ignore the signals (:func:`ignore_in_worker`): the main process stops them itself."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
PREEMPTED_EXIT = 75
"""Exit status of a preempted run (EX_TEMPFAIL: run the same command again to resume)."""


class Preempted(Exception):
    """Raised by the trainer after the checkpoint of a preempted run is written."""

    def __init__(self, checkpoint: str, signal_name: str) -> None:
        super().__init__(f"{signal_name} received: checkpoint {checkpoint} written; run the same command to resume")
        self.checkpoint = checkpoint


class PreemptionFlag:
    """Set by SIGTERM / SIGUSR1 while :meth:`installed` is active (main thread only; elsewhere it stays unset)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: object) -> None:
        self.signal_name = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self) -> Iterator[PreemptionFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def ignore_in_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: MONAI's (random state per worker), and the preemption signals ignored."""
    from monai.data.utils import worker_init_fn as monai_worker_init_fn

    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    monai_worker_init_fn(worker_id)
