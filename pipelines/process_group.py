"""Run a command in a process group of its own that ends with the process that started it.

axolotl starts workers of its own (data loading, tokenisation); killing only the process we started leaves
them running on System B's GPUs. :func:`grouped` wraps a command so that it runs under a small leader
(this file, run as a script with the standard library only): the leader starts a new session, asks the
kernel for a signal when its parent dies (Linux ``PR_SET_PDEATHSIG``, and a poll of the parent's pid as a
fallback), and on that signal, or on SIGTERM/SIGINT/SIGHUP, ends the whole group: SIGTERM, then SIGKILL
after a grace period. The caller ends the group with :func:`end_group` when it gives up on the command
(a timeout, an exception, the task being stopped).

    proc = subprocess.Popen(grouped(cmd), start_new_session=True, ...)
    try:
        ...
    finally:
        end_group(proc)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

GRACE_S = 10.0  # between SIGTERM and SIGKILL
PR_SET_PDEATHSIG = 1


def grouped(cmd: list[str], parent_pid: int | None = None) -> list[str]:
    """``cmd`` wrapped in the group leader, tied to ``parent_pid`` (default: this process)."""
    return [sys.executable, os.path.abspath(__file__), str(parent_pid or os.getpid()), "--", *cmd]


def end_group(proc: subprocess.Popen[str], grace_s: float = GRACE_S) -> None:
    """End ``proc``'s whole process group if anything in it still runs: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc.pid, signal.SIGKILL)  # stragglers of a leader that is already gone
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent(sig: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _lead(parent: int, cmd: list[str]) -> int:
    if os.getpgid(0) != os.getpid():
        os.setsid()
    _die_with_parent(signal.SIGTERM)
    pgid = os.getpgid(0)
    ending = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def end(*_: object) -> None:
        if ending.is_set():
            return
        ending.set()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's SIGTERM reaches this leader too
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and child is not None and child.poll() is None:
            time.sleep(0.1)
        _signal_group(pgid, signal.SIGKILL)  # ends the leader as well
        os._exit(143)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, end)
    # the child dies with the leader even if the leader is killed outright (SIGKILL leaves no handler)
    child = subprocess.Popen(cmd, preexec_fn=lambda: _die_with_parent(signal.SIGKILL))
    if os.getppid() != parent:  # the parent died before the death signal was armed
        end()

    def watch_parent() -> None:
        while not ending.is_set():
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(1.0)

    threading.Thread(target=watch_parent, daemon=True).start()
    rc = child.wait()
    ending.set()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _signal_group(pgid, signal.SIGTERM)  # workers the command left behind
    return rc


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: process_group.py PARENT_PID -- COMMAND [ARGS...]")
    sys.exit(_lead(int(sys.argv[1]), sys.argv[3:]))
