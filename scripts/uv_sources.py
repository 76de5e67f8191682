"""Print the package sources pip is configured with, as uv options (uv does not read pip's configuration).

`make setup` installs the lock files with uv; on a machine whose pip has extra indexes or local wheel folders
(these machines: the CPU torch wheel lies in a find-links folder), uv must look in the same places or it would
miss ``torch==2.13.0+cpu``. Reads ``pip config list`` (files and ``PIP_*`` variables) and prints, on one line,
uv's ``--index-url``, ``--extra-index-url`` and ``--find-links`` options plus ``--index-strategy
unsafe-best-match`` (pip's rule: the best version from any source).

One difference needs more than a translation. For one version, pip pools the files of every index and takes
the wheel whose tag best fits the interpreter; uv takes that version's files from the first index that lists
it. With two local indexes, one holding ``multiprocess-0.70.19-py310`` and the other its ``py311`` wheel, uv
installed the Python 3.10 build on 3.11 and every axolotl run failed (``fork_exec() takes exactly 23
arguments``). uv does pool the files of its ``--find-links`` folders with the index's, so an index on local
disk (a ``file://`` URL) is handed to uv as the folders its pages link to (with ``--no-index`` when it is
pip's ``index-url``, which replaces PyPI). Indexes over HTTP are passed as indexes.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

OPTIONS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links"}
HREF = re.compile(r'href="([^"#]+)')


def pip_config() -> dict[str, str]:
    """pip's effective configuration, key (without its section) → value; later sections win as in pip."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        name = key.rsplit(".", 1)[-1]
        found[name] = value.strip().strip("'\"")
    return found


def file_folders(index: Path) -> list[str]:
    """The folders holding the files a local simple index links to (its project pages' targets), sorted."""
    folders: set[Path] = set()
    for page in index.glob("*/index.html"):
        for href in HREF.findall(page.read_text(errors="replace")):
            if "://" in href:
                continue  # a page that links elsewhere: that file is not on this disk
            folders.add((page.parent / unquote(href)).resolve().parent)
    return sorted(str(f) for f in folders if f.is_dir())


def uv_options(config: dict[str, str]) -> list[str]:
    """The uv options for pip's index and find-links settings (each may list several, space-separated)."""
    args: list[str] = []
    for key, option in OPTIONS.items():
        for value in config.get(key, "").split():
            url = urlparse(value)
            folders = (
                file_folders(Path(unquote(url.path))) if url.scheme == "file" and key != "find-links" else []
            )
            if folders:
                args += [arg for folder in folders for arg in ("--find-links", folder)]
                if key == "index-url":
                    args.append("--no-index")  # pip's index-url replaces PyPI: so must the folders
            else:
                args += [option, value]
    return [*args, "--index-strategy", "unsafe-best-match"]


if __name__ == "__main__":
    print(shlex.join(uv_options(pip_config())))
