"""Print the package sources pip is configured with, as uv options (uv does not read pip's configuration).

`make setup` installs the lock files with uv; on a machine whose pip has extra indexes or local wheel folders
(these machines: the CPU torch wheel lies in a find-links folder), uv must look in the same places or it would
miss ``torch==2.13.0+cpu``. Reads ``pip config list`` (files and ``PIP_*`` variables) and prints, on one line,
``--index-url``, ``--extra-index-url`` and ``--find-links`` options plus ``--index-strategy unsafe-best-match``
(pip's rule: the best version from any source). Prints nothing else; a pip without configuration gives only
the strategy.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

OPTIONS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links"}


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


def uv_options(config: dict[str, str]) -> list[str]:
    """The uv options for pip's index and find-links settings (each may list several, space-separated)."""
    args: list[str] = []
    for key, option in OPTIONS.items():
        for value in config.get(key, "").split():
            args += [option, value]
    return [*args, "--index-strategy", "unsafe-best-match"]


if __name__ == "__main__":
    print(shlex.join(uv_options(pip_config())))
