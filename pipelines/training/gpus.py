"""Which GPU a training job may use: one lock file per GPU on the worker.

The Airflow pool ``system_b_gpu`` (one slot per GPU) bounds how many jobs run at once on System B, but a pool
slot has no number. Each job therefore takes the first free lock among ``CBNANO_GPUS`` per-GPU lock files and
sets ``CUDA_VISIBLE_DEVICES`` to that index, so two jobs never share a GPU. With ``CBNANO_GPUS=0`` (the
default: CPU machines) there is nothing to lease and jobs run on the CPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def gpu_lease(count: int, lock_dir: Path | None = None, wait_s: float = 600.0) -> Iterator[int | None]:
    """Hold one GPU index (or None when ``count`` is 0) for the duration of the block."""
    if count <= 0:
        yield None
        return
    lock_dir = lock_dir or Path(tempfile.gettempdir())
    deadline = time.monotonic() + wait_s
    while True:
        for i in range(count):
            fd = os.open(lock_dir / f"cbnano-gpu-{i}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield i
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"no free GPU among {count} after {wait_s:.0f}s (is the pool larger than the GPUs?)"
            )
        time.sleep(2.0)
