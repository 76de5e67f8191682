"""A real Milvus standalone server for the `milvus_server` tier: PyPI's `milvus` package (2.3.5), started
locally with its own data folder and free ports (no Docker), once per session; stopped at the end."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

PORT_FLAGS = (
    "--proxy-port",
    "--etcd-port",
    "--root-coord-port",
    "--proxy-internal-port",
    "--query-coord-port",
    "--query-node-port",
    "--index-coord-port",
    "--index-node-port",
    "--data-coord-port",
    "--data-node-port",
)


def _servers(marker: str) -> list[int]:
    """Pids of processes whose command line contains ``marker`` (the server's data folder, or the pytest
    folders of earlier sessions): milvus-server runs the real binary, copied into the data folder, as a child
    in a session of its own, so signalling the wrapper's process group does not reach it."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = (
                Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
        if marker in cmdline and "milvus run standalone" in cmdline:  # not Milvus Lite servers
            pids.append(int(entry))
    return pids


def _stop(marker: str) -> None:
    """SIGTERM every server process matching ``marker``, SIGKILL what is left after 30 s."""
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
        pids = _servers(marker)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while _servers(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not _servers(marker):
            return


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """The URI of a running Milvus 2.3.5 standalone server."""
    exe = Path(sys.executable).with_name("milvus-server")
    if not exe.exists():
        pytest.fail(
            "milvus-server is not installed: `make setup` installs the `milvus` package (the dev extra)"
        )
    # a server left by an earlier session that was killed holds fixed ports (etcd peer 2380, metrics 9091)
    _stop("/pytest-of-")
    data = tmp_path_factory.mktemp("milvus-server")
    ports = {flag: free_port() for flag in PORT_FLAGS}
    cmd = [str(exe), "--data", str(data)] + [str(x) for kv in ports.items() for x in kv]
    log = open(data / "server.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{ports['--proxy-port']}"
    deadline = time.monotonic() + 180
    from pymilvus import MilvusClient

    while True:
        try:
            client = MilvusClient(uri=uri, timeout=5)
            client.list_collections()
            client.close()
            break
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
                pytest.fail(f"Milvus server did not start: {(data / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    _stop(str(data))  # the binary itself, which the wrapper's process group does not include
    log.close()
