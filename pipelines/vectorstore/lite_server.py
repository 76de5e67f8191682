"""One Milvus Lite server per database file, shared by every process of the machine.

Milvus Lite admits one process per file. A single-machine lab runs the search service, the CLI and nightly
ingestion at once, so no platform process opens the file itself: the first one that needs it starts a small
server process (``python -m pipelines.vectorstore.lite_server FILE``) that owns the file, and every process,
that one included, talks to it over the Unix socket the server publishes. Lite's one-writer guarantee holds:
the server is the file's only opener, and the writes of all clients are serialised by it.

The files beside ``<file>``:

* ``<file>.cbnano-lock``: an exclusive ``flock`` held by the server for its whole life (its pid, command and
  start are written into it). A process that is not a platform server (an older version's in-process Lite, a
  notebook) holding it makes a server start fail with one line naming that holder, after ``wait_s``;
* ``<file>.cbnano-clients``: every attached process holds a shared ``flock`` on it. The server polls for an
  exclusive one; once it has had it (no client) for ``idle_s`` it stops, still holding it, so no client can
  attach to a server that is going away. A client that dies drops its lock with its descriptors;
* ``<file>.cbnano-start``: held while a process checks for a running server and starts one (one start at a
  time);
* ``<file>.cbnano-server.json``: the running server's pid and socket URI; ``<file>.cbnano-server.log``: its
  output, whose last line is the reason when it could not start.

A server killed with SIGKILL drops its locks with its descriptors; the embedded Milvus binary stops on its own
when the server's lock on Lite's own lock file goes, and the next client starts a fresh server.

Usage::

    uri = attach(path, wait_s=120)   # "unix:/tmp/...sock"; raises LiteBusy
    MilvusClient(uri=uri)
    ...
    detach(path)
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from pipelines.lake import LockHolder, lock_file, lock_holder, write_atomic
from pipelines.settings import MILVUS_LITE_IDLE_S

POLL_S = 0.2
SERVER_POLL_S = 0.25
LOG_MAX_BYTES = 1 << 20  # the server's log starts afresh past this
REPUBLISH_WAIT_S = 5.0  # how long a client waits for a live server to rewrite its lost state file


class LiteBusy(RuntimeError):
    """The Lite file's server could not be reached or started; the message says why (and names a holder)."""


class _Attachment:
    def __init__(self, fd: int, uri: str) -> None:
        self.fd = fd
        self.uri = uri
        self.count = 1


_ATTACHED: dict[str, _Attachment] = {}
_GUARD = threading.Lock()


def _forget_after_fork() -> None:  # a forked child attaches on its own (the parent's count is not its)
    _ATTACHED.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def _beside(key: str, suffix: str) -> Path:
    return Path(f"{key}.{suffix}")


def lock_path(path: str) -> Path:
    """The lock file the server holds for as long as it owns the database file."""
    return _beside(str(Path(path).resolve()), "cbnano-lock")


def state_path(path: str) -> Path:
    """The running server's pid and socket URI."""
    return _beside(str(Path(path).resolve()), "cbnano-server.json")


def holder(path: str) -> LockHolder:
    """What the current (or last) owner of the file wrote into the lock file (empty if nothing readable)."""
    return lock_holder(lock_path(path))


def server_state(path: str) -> dict[str, object]:
    """The state file of the file's server (empty when none is running or it cannot be read)."""
    try:
        return dict(json.loads(state_path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def _flock(fd: int, mode: int, deadline: float) -> bool:
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)


def _owner_alive(key: str) -> bool:
    """True while some process holds the file's lock (a probe that takes it gives it straight back)."""
    fd = os.open(lock_path(key), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's lock, if it got one
    return False


def _running_uri(key: str) -> str | None:
    """The socket URI of the file's live server, or None when none runs. A live platform server whose state
    file was lost (deleted by hand, a full disk) is asked to write it again (SIGUSR1) rather than taken for a
    foreign holder."""
    state = server_state(key)
    uri, pid = state.get("uri"), state.get("pid")
    if isinstance(uri, str) and pid == holder(key).get("pid") and _owner_alive(key):
        return uri
    who = holder(key)
    if isinstance(who.get("pid"), int) and "lite_server" in str(who.get("command", "")) and _owner_alive(key):
        try:
            os.kill(int(who["pid"]), signal.SIGUSR1)
        except (ProcessLookupError, PermissionError):
            return None
        deadline = time.monotonic() + REPUBLISH_WAIT_S
        while time.monotonic() < deadline:
            state = server_state(key)
            if state.get("pid") == who["pid"] and isinstance(state.get("uri"), str):
                return str(state["uri"])
            time.sleep(POLL_S)
    return None


def _start_server(key: str, wait_s: float, idle_s: float, deadline: float) -> str:
    """Start the file's server and wait until it has published its socket; raises :class:`LiteBusy`."""
    state_path(key).unlink(missing_ok=True)
    log = _beside(key, "cbnano-server.log")
    with open(log, "ab" if not log.exists() or log.stat().st_size < LOG_MAX_BYTES else "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.vectorstore.lite_server", key, "--idle-s", str(idle_s)]
            + ["--wait-s", str(wait_s)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in the caller's process group: a Ctrl-C of a CLI leaves it serving
            close_fds=True,
        )
    while True:
        state = server_state(key)
        if state.get("pid") == proc.pid and isinstance(state.get("uri"), str):
            return str(state["uri"])
        code = proc.poll()
        if code is not None:
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            reason = lines[-1] if lines else f"exit status {code}"
            raise LiteBusy(f"Milvus Lite server for {key} did not start: {reason}")
        if time.monotonic() >= deadline + 30:  # the server's own wait plus its start-up
            proc.kill()
            raise LiteBusy(
                f"Milvus Lite server for {key} did not start within {wait_s + 30:.0f}s (see {log})"
            )
        time.sleep(POLL_S)


def serving(path: str, uri: str) -> bool:
    """True while the file's live server is the one at ``uri``."""
    return _running_uri(str(Path(path).resolve())) == uri


def attach(path: str, wait_s: float, idle_s: float = MILVUS_LITE_IDLE_S) -> str:
    """The socket URI of the file's server, started if none runs; counted per process (see :func:`detach`).

    Raises :class:`LiteBusy` when no server can be reached or started within ``wait_s``.
    """
    key = str(Path(path).resolve())
    with _GUARD:
        held = _ATTACHED.get(key)
        if held is not None and _running_uri(key) == held.uri:
            held.count += 1
            return held.uri
        if held is not None:  # the server this process attached to is gone (killed): attach afresh
            del _ATTACHED[key]
            os.close(held.fd)
        deadline = time.monotonic() + wait_s
        fd = os.open(_beside(key, "cbnano-clients"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _flock(fd, fcntl.LOCK_SH, deadline):  # only a server that is stopping holds it
                raise LiteBusy(
                    f"Milvus Lite server for {key} is stopping and did not let go in {wait_s:.0f}s"
                )
            start = os.open(_beside(key, "cbnano-start"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not _flock(start, fcntl.LOCK_EX, deadline):
                    raise LiteBusy(
                        f"another process has been starting the Milvus Lite server for {key} for "
                        f"{wait_s:.0f}s"
                    )
                uri = _running_uri(key) or _start_server(key, wait_s, idle_s, deadline)
            finally:
                os.close(start)
        except BaseException:
            os.close(fd)
            raise
        _ATTACHED[key] = _Attachment(fd, uri)
        return uri


def detach(path: str) -> None:
    """Give back one attachment; the last one of the process lets the server count it gone."""
    key = str(Path(path).resolve())
    with _GUARD:
        held = _ATTACHED.get(key)
        if held is None:
            return
        held.count -= 1
        if held.count <= 0:
            del _ATTACHED[key]
            os.close(held.fd)  # closing drops the shared lock


# --- the server process ---------------------------------------------------------------------------------


def lite_lock_path(key: str) -> Path:
    """milvus_lite's own lock file of a database file (``.<name>.lock`` beside it, a POSIX ``lockf`` lock)."""
    return Path(key).with_name(f".{Path(key).name}.lock")


def _lite_lock_holder(key: str, deadline: float) -> tuple[int | str, str] | None:
    """(pid, command) of a process holding milvus_lite's own lock on ``key`` past ``deadline``, else None
    (the lock is free). Probing takes the lock and gives it straight back; it never removes the file."""
    path = lite_lock_path(key)
    while path.exists():
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_UN)
            return None
        except OSError:  # held by another process
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        if time.monotonic() >= deadline:
            return _posix_lock_owner(inode)
        time.sleep(POLL_S)
    return None


def _posix_lock_owner(inode: int) -> tuple[int | str, str]:
    """The pid and command line of the process holding a POSIX lock on the file with ``inode`` (from
    ``/proc/locks``); ("?", "unknown") where the kernel does not say."""
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) > 5 and parts[1] == "POSIX" and parts[5].rsplit(":", 1)[-1] == str(inode):
                pid = int(parts[4])
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                return pid, raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except (OSError, ValueError):
        pass
    return "?", "unknown"


def serve(key: str, idle_s: float, wait_s: float) -> int:
    """Own ``key`` until no client has been attached for ``idle_s``; returns the exit status."""
    with warnings.catch_warnings():  # milvus_lite imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        from milvus_lite.server import Server

    # before the lock names this process: a client that finds the holder but no state file signals it, and
    # SIGUSR1's default action would kill a server still starting
    republish = threading.Event()
    signal.signal(signal.SIGUSR1, lambda signum, frame: republish.set())
    lock_fd = lock_file(lock_path(key), wait_s)
    if lock_fd is None:
        who = holder(key)
        print(
            f"Milvus Lite file {key} is in use by pid {who.get('pid', '?')} ({who.get('command', '?')}, since "
            f"{who.get('since', '?')}); waited {wait_s:.0f}s. Stop that process, or point CBNANO_MILVUS_URI "
            "at a Milvus server",
            flush=True,
        )
        return 3
    # a program that opened the file with milvus_lite itself (a notebook's MilvusClient("milvus.db")) holds
    # Lite's own lock: wait for it as for a foreign holder of ours, and never touch that lock file
    foreign = _lite_lock_holder(key, time.monotonic() + wait_s)
    if foreign is not None:
        print(
            f"Milvus Lite file {key} is open in pid {foreign[0]} ({foreign[1]}), outside the platform; waited "
            f"{wait_s:.0f}s. Close it there (MilvusClient.close()), or point CBNANO_MILVUS_URI at a Milvus "
            "server",
            flush=True,
        )
        os.close(lock_fd)
        return 3
    server = Server(key)
    if not server.init() or not server.start():
        # the failed server object would delete Lite's lock file on its way out (milvus_lite's stop() and
        # __del__ unlink it), taking the lock from whoever opened the file in the meantime: point it elsewhere
        server._lock_path = str(Path(key).with_name(f".{Path(key).name}.cbnano-not-ours"))  # noqa: SLF001
        print(
            f"Milvus Lite could not open {key} (another program has it open, or the file is damaged)",
            flush=True,
        )
        os.close(lock_fd)
        return 1
    stopping = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    clients = os.open(_beside(key, "cbnano-clients"), os.O_RDWR | os.O_CREAT, 0o644)
    since = datetime.now(UTC).isoformat(timespec="seconds")
    state = json.dumps({"pid": os.getpid(), "uri": server.uds_path, "since": since}).encode()
    write_atomic(state_path(key), state)
    print(f"{since} serving {key} on {server.uds_path}", flush=True)
    status = 0
    idle_since: float | None = None
    try:
        while not stopping.is_set():
            if republish.is_set():
                republish.clear()
                write_atomic(state_path(key), state)
            proc = server._p  # noqa: SLF001 - milvus_lite exposes no other way to see its binary exit
            if proc is not None and proc.poll() is not None:
                print(f"the Milvus Lite binary exited with status {proc.returncode}", flush=True)
                status = 1
                break
            try:
                fcntl.flock(clients, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                idle_since = None
            else:
                now = time.monotonic()
                idle_since = now if idle_since is None else idle_since
                if now - idle_since >= idle_s:
                    break  # stop while holding it: nobody attaches to a server that is going away
                fcntl.flock(clients, fcntl.LOCK_UN)
            stopping.wait(SERVER_POLL_S)
    finally:
        state_path(key).unlink(missing_ok=True)
        server.stop()
        os.close(lock_fd)
        os.close(clients)
    print(f"{datetime.now(UTC).isoformat(timespec='seconds')} stopped", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.vectorstore.lite_server")
    parser.add_argument("file", help="the Milvus Lite database file")
    parser.add_argument(
        "--idle-s", type=float, default=MILVUS_LITE_IDLE_S, help="stop after this long unused"
    )
    parser.add_argument("--wait-s", type=float, default=0.0, help="wait this long for a foreign holder")
    args = parser.parse_args(argv)
    return serve(str(Path(args.file).resolve()), args.idle_s, args.wait_s)


if __name__ == "__main__":
    sys.exit(main())
