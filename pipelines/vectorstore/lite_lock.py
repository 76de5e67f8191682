"""The platform's own inter-process lock around a Milvus Lite file.

Milvus Lite admits one process per database file, and its own guard is not enough: in milvus-lite 2.5.1 a
process that fails to open the file removes the holder's lock on its way out, after which a third process
opens the file beside the first (a second writer, or ``cbnano stats`` reporting an empty corpus). So before
any process opens a Lite file it takes an exclusive ``flock`` on ``<file>.cbnano-lock`` beside it:

* a process that does not get it within ``wait_s`` never touches Milvus Lite, and raises one line naming the
  holder (pid, command, since when), which the holder wrote into the lock file;
* the lock is held while any store of the process has the file open (a count per file), and on the last
  close the process also stops its embedded Milvus Lite server, so the file is really free when the lock is;
* a holder that dies loses the lock with its file descriptors (the kernel drops ``flock`` locks), so a
  crash never leaves the file locked.

Usage::

    hold_lite(path, wait_s=120)      # blocks up to wait_s, raises LiteBusy
    ...
    release_lite(path)
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from pipelines.lake import lock_file, lock_holder

_HOLDS: dict[str, list[int]] = {}  # resolved path -> [fd, open stores]
_GUARD = threading.Lock()
POLL_S = 0.2


class LiteBusy(RuntimeError):
    """Another process holds the Milvus Lite file; the message names it."""


def lock_path(path: str) -> Path:
    """The lock file beside the database file."""
    return Path(f"{path}.cbnano-lock")


def holder(path: str) -> dict[str, object]:
    """What the current (or last) holder wrote into the lock file (empty if nothing readable)."""
    return lock_holder(lock_path(path))


def hold_lite(path: str, wait_s: float) -> None:
    """Take (or, within this process, share) the lock of the Lite file ``path``; raises :class:`LiteBusy`."""
    key = str(Path(path).resolve())
    with _GUARD:
        if key in _HOLDS:
            _HOLDS[key][1] += 1
            return
        fd = lock_file(lock_path(key), wait_s, POLL_S)
        if fd is None:
            who = holder(key)
            raise LiteBusy(
                f"Milvus Lite file {key} is in use by pid {who.get('pid', '?')} ({who.get('command', '?')}, "
                f"since {who.get('since', '?')}); waited {wait_s:.0f}s. Milvus Lite admits one process at "
                "a time: wait for it, or point CBNANO_MILVUS_URI at a Milvus server"
            )
        _HOLDS[key] = [fd, 1]


def release_lite(path: str) -> None:
    """Give back one hold; the last one stops this process's Milvus Lite server and drops the lock."""
    key = str(Path(path).resolve())
    with _GUARD:
        hold = _HOLDS.get(key)
        if hold is None:
            return
        hold[1] -= 1
        if hold[1] > 0:
            return
        del _HOLDS[key]
        try:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(key)
        except Exception:  # noqa: BLE001 - a server that is already gone is what we want
            pass
        fcntl.flock(hold[0], fcntl.LOCK_UN)
        os.close(hold[0])
