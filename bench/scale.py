"""Benchmark: the corpus at the lab's planned scale, 1,000,000 chunks, in Milvus Lite and a Milvus server.

    .venv/bin/python bench/scale.py [--rows 1000000] [--targets lite server] [--queries 200]

The chunks are synthetic, as in bench/search.py: 2,000 real MiniLM embeddings of generated abstracts, each
replicated 500 times with Gaussian noise (sigma 0.02, re-normalised), with the abstracts' keyword text (so
BM25 sees 500 copies of each term distribution). For each target it prints the insert rate (upserts of 2,000
rows, then a flush), the resident memory of the Milvus processes after the load, and the p50/p95 of dense,
keyword and hybrid search through :class:`pipelines.retrieval.search.Searcher`, the query's embedding
included. Goal (issue 25): hybrid p95 <= 100 ms at 1M on the embedded default (Lite).

``server`` starts PyPI's ``milvus`` package (Milvus 2.3.5 standalone, no Docker) in a temporary folder. It has
no BM25 functions, so the platform's store creates dense-only collections there and only ``dense`` is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from search import fill, time_modes  # noqa: E402

SERVER_PORTS = ("--proxy-port", "--etcd-port", "--root-coord-port", "--proxy-internal-port",
                "--query-coord-port", "--query-node-port", "--index-coord-port", "--index-node-port",
                "--data-coord-port", "--data-node-port")  # fmt: skip


def milvus_rss_mb(marker: str) -> float:
    """Resident memory of the Milvus processes whose command line names ``marker`` (this run's folder: Lite's
    server binary, or the standalone), so a server left by another run is not counted."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "milvus" not in cmd or marker not in cmd or "bench/scale.py" in cmd:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = Path(sys.executable).with_name("milvus-server")
    ports = {flag: _port() for flag in SERVER_PORTS}
    cmd = [str(exe), "--data", str(folder)] + [str(x) for kv in ports.items() for x in kv]
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - the server's, until it stops
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{ports['--proxy-port']}"
    from pymilvus import MilvusClient

    deadline = time.monotonic() + 180
    while True:
        try:
            MilvusClient(uri=uri, timeout=5).list_collections()
            return proc, uri
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Milvus server did not start: see {folder / 'server.log'}") from None
            time.sleep(1)


def stop_server(proc: subprocess.Popen[bytes], folder: Path) -> None:
    """Stop the wrapper and the real binary, which the wrapper starts in a session of its own (so its process
    group does not reach it): every ``milvus run standalone`` whose command line names ``folder``."""
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(120)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [
            int(pid)
            for pid in filter(str.isdigit, os.listdir("/proc"))
            if str(folder) in _cmdline(pid) and "milvus run standalone" in _cmdline(pid)
        ]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while pids and any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
            time.sleep(0.5)


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def run_target(target: str, rows: int, queries: int) -> None:
    from pipelines.embedding.minilm import get_embedder
    from pipelines.retrieval.search import Searcher
    from pipelines.settings import load_settings
    from pipelines.vectorstore.milvus import MilvusStore

    work = Path(tempfile.mkdtemp(prefix=f"cbnano-bench-scale-{target}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBNANO_")}
    env["CBNANO_HOME"] = str(work / "home")
    server = None
    if target == "server":
        (work / "milvus").mkdir()
        server, env["CBNANO_MILVUS_URI"] = start_server(work / "milvus")
    try:
        settings = load_settings(env)
        emb = get_embedder(settings.embedding_model)
        with MilvusStore.from_settings(settings) as store:
            filled = fill(store, settings, emb, rows)
            keyword = store.full_text  # False on a Milvus without BM25 functions (2.3.5)
        modes = ["dense", "keyword", "hybrid"] if keyword else ["dense"]
        with Searcher.from_settings(settings) as searcher:
            count = searcher.store.count()
            timed = time_modes(searcher, modes, queries)
        out = {
            "bench": "scale",
            "target": target,
            "rows": count,
            "insert_rows_per_s": round(count / filled["load_s"]),
            "load_s": round(filled["load_s"], 1),
            "milvus_rss_mb": milvus_rss_mb(str(work)),
            "disk_mb": round(sum(f.stat().st_size for f in work.rglob("*") if f.is_file()) / 2**20, 1),
            "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
        }
        for mode, lat in timed.items():
            pct = statistics.quantiles(lat, n=100)
            out[f"{mode}_p50_ms"], out[f"{mode}_p95_ms"] = round(pct[49], 1), round(pct[94], 1)
        print(json.dumps(out), flush=True)
    finally:
        if server is not None:
            stop_server(server, work / "milvus")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--targets", nargs="+", choices=["lite", "server"], default=["lite", "server"])
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    for target in args.targets:
        run_target(target, args.rows, args.queries)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
