"""The data lake: raw responses and normalised records as files under ``CBNANO_DATA_DIR``.

Layout: ``<data_dir>/<source>/<YYYY-MM-DD>/<run key>/`` holding ``raw/`` (responses as received),
``records.jsonl`` (normalised), ``quarantine.jsonl`` (entries that could not be read, with the reason)
and ``manifest.json``. Every file is written to a temporary name in the same folder and renamed into place,
so a reader never sees half a file and a retried task simply rewrites it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def partition_dir(data_dir: Path, source: str, day: str, run_key: str) -> Path:
    """The folder of one run's files: ``<data_dir>/<source>/<day>/<run_key>``."""
    return Path(data_dir) / source / day / run_key


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


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> tuple[int, str]:
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
