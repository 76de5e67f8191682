"""The data lake: raw responses and normalised records as files under ``CBNANO_DATA_DIR``.

Layout: ``<data_dir>/<source>/<YYYY-MM-DD>/<run key>/`` holding ``raw/`` (responses as received),
``records.jsonl`` (normalised), ``quarantine.jsonl`` (entries that could not be read, with the reason)
and ``manifest.json``. Every file is written to a temporary name in the same folder and renamed into place,
so a reader never sees half a file and a retried task simply rewrites it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypedDict, cast

SOURCES = ("arxiv", "pubchem")  # the sources whose runs the lake holds (lab drops live under internal/)


def partition_dir(data_dir: Path, source: str, day: str, run_key: str) -> Path:
    """The folder of one run's files: ``<data_dir>/<source>/<day>/<run_key>``."""
    return Path(data_dir) / source / day / run_key


@dataclass(frozen=True)
class RunFile:
    """One file of one run in the lake, with the partition it sits in."""

    path: Path
    source: str
    day: str  # YYYY-MM-DD, the partition
    run: str  # the run key

    def records(self) -> Iterator[dict[str, Any]]:
        """The JSON-lines objects of this file (for ``records.jsonl`` / ``quarantine.jsonl``)."""
        return read_jsonl(self.path)


def run_files(
    data_dir: Path,
    name: str,
    sources: Iterable[str] = SOURCES,
    first_day: date | None = None,
    last_day: date | None = None,
) -> list[RunFile]:
    """Every run's file called ``name`` (``records.jsonl``, ``summary.json``, ...) for ``sources``, in
    partitions from ``first_day`` to ``last_day`` (both included; None: unbounded), ordered by source, day
    and run key."""
    lo = first_day.isoformat() if first_day else ""
    hi = last_day.isoformat() if last_day else "9999"
    out = []
    for source in sources:
        for path in sorted(Path(data_dir).glob(f"{source}/*/*/{name}")):
            day = path.parent.parent.name
            if lo <= day <= hi:
                out.append(RunFile(path, source, day, path.parent.name))
    return out


def staged_records(
    data_dir: Path,
    sources: Iterable[str] = SOURCES,
    first_day: date | None = None,
    last_day: date | None = None,
) -> list[RunFile]:
    """The staged ``records.jsonl`` of every run (see :func:`run_files`), oldest partition first."""
    return run_files(data_dir, "records.jsonl", sources, first_day, last_day)


def run_summaries(
    data_dir: Path, sources: Iterable[str] = SOURCES, limit: int | None = None
) -> list[RunFile]:
    """The ``summary.json`` of every indexed run, the most recently written first (at most ``limit``)."""
    found = run_files(data_dir, "summary.json", sources)
    found.sort(key=lambda f: f.path.stat().st_mtime, reverse=True)
    return found[:limit] if limit is not None else found


class RunBusy(RuntimeError):
    """Another process is working in the same run folder; the message names it."""


RUN_LOCK_WAIT_S = 600.0  # a fetch of a large window takes minutes; a second run of it waits that long


def lock_file(path: Path, wait_s: float, poll_s: float = 0.2) -> int | None:
    """Take an exclusive ``flock`` on ``path`` (created if missing), waiting up to ``wait_s``.

    Returns the open descriptor, whose closing drops the lock (as does the process dying), after writing the
    holder (pid, command, since) into the file for whoever waits next; None when the wait ran out.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(poll_s)
    os.ftruncate(fd, 0)
    os.pwrite(
        fd,
        json.dumps(
            {
                "pid": os.getpid(),
                "command": " ".join(sys.argv)[:200],
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        ).encode(),
        0,
    )
    return fd


class LockHolder(TypedDict, total=False):
    """What a :func:`lock_file` holder writes into the lock file."""

    pid: int
    command: str
    since: str  # ISO time


def lock_holder(path: Path) -> LockHolder:
    """What the current (or last) holder of a :func:`lock_file` lock wrote (empty if nothing readable)."""
    try:
        who = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return cast(LockHolder, who) if isinstance(who, dict) else {}


@contextmanager
def run_lock(run_dir: Path, wait_s: float | None = None) -> Iterator[None]:
    """Hold the run folder exclusively (``flock`` on ``<run_dir>/.lock``) while fetching or staging into it.

    Two runs of the same window share a folder (its name is the window's: a retry resumes it); without the
    lock, the second one's refetch would delete the first one's raw pages while it reads them. A second
    process waits up to ``wait_s`` and then raises :class:`RunBusy` naming the holder. The kernel drops the
    lock with a process that dies.
    """
    wait_s = RUN_LOCK_WAIT_S if wait_s is None else wait_s
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = lock_file(run_dir / ".lock", wait_s)
    if fd is None:
        who = lock_holder(run_dir / ".lock")
        raise RunBusy(
            f"another run is working in {run_dir} (pid {who.get('pid', '?')}, {who.get('command', '?')}, "
            f"since {who.get('since', '?')}); waited {wait_s:.0f}s"
        )
    try:
        yield
    finally:
        os.close(fd)  # closing drops the lock


def write_atomic(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` via a temporary file and rename; returns the sha256 of ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def write_json(path: Path, obj: Any) -> str:
    """Write ``obj`` as indented JSON, atomically; returns its sha256."""
    return write_atomic(path, (json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode())


def write_jsonl(path: Path, rows: Iterable[Mapping[str, object]]) -> tuple[int, str]:
    """Write one JSON object per line, atomically; returns (rows written, sha256)."""
    lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in rows]
    data = ("\n".join(lines) + "\n").encode() if lines else b""
    return len(lines), write_atomic(path, data)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The objects of a JSON-lines file, in order (blank lines skipped)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
