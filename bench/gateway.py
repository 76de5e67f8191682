"""Benchmark: what the gateway adds over calling System A directly, at 1 and 16 concurrent clients.

    .venv/bin/python bench/gateway.py [--requests 400] [--clients 1 16] [--cases plain cached ...]

Set-up: the vLLM stand-in (pipelines/vllm_standin.py) plays System A with a catalysis adapter handed to it;
the golden retrieval corpus is indexed with the real MiniLM into a Milvus Lite file; `cbnano gateway` runs
as its own process (uvicorn, as in production) with one user's key. The load generator runs in a process of
its own (asyncio and aiohttp, one kept-alive connection per client) and sends ``--requests`` requests per
case, ``--clients`` at a time, the direct calls and the gateway's in alternating rounds:

* ``plain``: ``POST /v1/chat/completions`` to the stand-in directly, and the same body through the gateway
  (key lookup in SQLite, the user's limits, the served-model check against System A's list, the queue's
  place, the trace written), at ``temperature`` 0.7, so never from the cache;
* ``cached``: the same at ``temperature`` 0: the gateway's cache (in-process) answers every repeat of the
  four questions without System A;
* ``stream``: the same with ``"stream": true``; the figure is the time to the first byte of the body;
* ``rag``: ``catalysis+rag`` through the gateway (hybrid search from the question, the ask prompt) against a
  direct call with the same question and no sources; and ``search``: the gateway's ``/v1/search`` alone, whose
  p95 is the yardstick for ``rag``.

"Added" is the gateway's percentile minus the direct call's. Goals: plain p95 added <= 5 ms at one client
(issue 20) and <= 10 ms at 16 (issue 24); ``rag`` p95 added <= search p95 + 10 ms. Prints one JSON line per case and a summary line; the figures go to
docs/BENCHMARKS.md whatever they are. The machine's 2 cores run the load generator, the stand-in, the
gateway and Milvus Lite together: the gateway's figures include that contention.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = ("plain", "cached", "stream", "rag", "search")
QUESTIONS = [
    "Which ligand keeps CsPbI3 in its black phase?",
    "What suppresses coke in dry reforming of methane?",
    "How is the thermal conductivity of epoxy raised?",
    "Which electrolyte additive forms LiF-rich interphases?",
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _load(
    url: str, bodies: list[dict], headers: dict, clients: int, stream: bool, method: str = "POST"
) -> list[float]:
    """Latency (ms) of each request: the whole answer, or with ``stream`` the first byte of the body. Runs in
    the load generator's own process (:func:`_generator`): ``clients`` asyncio tasks, each with its own
    kept-alive connection, send ``bodies`` in turn."""
    import asyncio

    import aiohttp

    async def run() -> list[float]:
        queue = list(reversed(bodies))
        out: list[float] = []

        async def one(session: aiohttp.ClientSession, body: dict) -> float:
            t0 = time.perf_counter()
            if method == "GET":
                async with session.get(url, params=body, headers=headers) as resp:
                    resp.raise_for_status()
                    await resp.read()
                return (time.perf_counter() - t0) * 1000
            async with session.post(url, json=body, headers=headers) as resp:
                resp.raise_for_status()
                if not stream:
                    await resp.read()
                    return (time.perf_counter() - t0) * 1000
                first = await resp.content.readany()
                ttfb = (time.perf_counter() - t0) * 1000
                assert first
                async for _ in resp.content.iter_any():  # read the stream to its end, as a client does
                    pass
                return ttfb

        async def client(warm: list[dict]) -> None:
            timeout = aiohttp.ClientTimeout(total=120)
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1), timeout=timeout
            ) as session:
                for body in warm:  # warm-up: the connection, the model list, the first search
                    await one(session, body)
                await start.wait()  # every client starts measuring at once
                while queue:
                    out.append(await one(session, queue.pop()))

        start = asyncio.Barrier(clients)
        await asyncio.gather(
            *(client(bodies[i % len(bodies) : i % len(bodies) + 1] * 2) for i in range(clients))
        )
        return out

    return asyncio.run(run())


_POOL: ProcessPoolExecutor | None = None


def _generator() -> ProcessPoolExecutor:
    """The load generator: one process of its own (spawned: it shares no interpreter lock with the stand-in's
    threads), kept for the whole bench."""
    global _POOL
    if _POOL is None:
        _POOL = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    return _POOL


GATEWAY_PID = 0  # the gateway process, whose CPU time the rounds through it are charged


def _cpu_s(pid: int) -> tuple[float, float]:
    """A process's CPU time so far, (user, system) seconds (Linux's /proc); zeros where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


CPU_MS: dict[tuple[str, int], tuple[float, float]] = {}  # (case, clients) -> the gateway's CPU per request
# (user, system; ms)


def _pair(
    direct: tuple[str, list[dict], dict],
    via: tuple[str, list[dict], dict],
    c: int,
    stream: bool,
    rounds: int = 4,
    case: str = "",
) -> tuple[list[float], list[float]]:
    """The direct and the gateway latencies of one case, measured in alternating rounds (direct, gateway,
    direct, ...) so that a slow spell of the machine falls on both. The gateway's CPU time over its rounds,
    per request, goes to ``CPU_MS``: unlike the latencies it hardly moves when the machine is shared."""
    d: list[float] = []
    g: list[float] = []
    user = system = 0.0
    for r in range(rounds):
        for (url, bodies, headers), out in ((direct, d), (via, g)):
            part = bodies[r::rounds]
            before = _cpu_s(GATEWAY_PID)
            out += _generator().submit(_load, url, part, headers, c, stream).result()
            if out is g:
                after = _cpu_s(GATEWAY_PID)
                user, system = user + after[0] - before[0], system + after[1] - before[1]
    CPU_MS[(case, c)] = (user * 1000 / max(1, len(g)), system * 1000 / max(1, len(g)))
    return d, g


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="which cases to run (all)")
    ap.add_argument(
        "--profile", type=Path, help="run the gateway under cProfile and write its event loop's profile here"
    )
    args = ap.parse_args()

    from pipelines.embedding.minilm import MINILM, get_embedder
    from pipelines.ingestion.indexing import index_documents
    from pipelines.ops.traces import GatewayStore
    from pipelines.publishing.model_store import ModelStore
    from pipelines.publishing.serving import hand_off
    from pipelines.retrieval.golden import golden_path, load_corpus
    from pipelines.settings import load_settings
    from pipelines.vectorstore.milvus import MilvusStore
    from pipelines.vllm_standin import VLLMStandIn

    work = Path(tempfile.mkdtemp(prefix="cbnano-bench-gateway-"))
    system_a = VLLMStandIn(base="smollm2").start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBNANO_")}
    env.update({"CBNANO_HOME": str(work / "home"), "CBNANO_SYSTEM_A_URL": system_a.url})
    # one user sends every request: limits far above the load, so the figures are the gateway's work
    env.update({"CBNANO_GATEWAY_RPM": "100000000", "CBNANO_GATEWAY_TOKENS_PER_DAY": "100000000000"})
    settings = load_settings(env)
    with MilvusStore.from_settings(settings) as ms:
        ms.ensure_collection(384)
        index_documents(load_corpus(golden_path("corpus.jsonl")), ms, lambda: get_embedder(MINILM), MINILM)
    content = work / "adapter-content"
    (content / "adapter").mkdir(parents=True)
    (content / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "smollm2"})
    )
    (content / "adapter" / "adapter_model.safetensors").write_bytes(b"w")
    ModelStore(settings.model_store).publish("catalysis", "bench", content, {})
    assert hand_off(settings, "catalysis", alert=False)["state"] == "confirmed"
    key = GatewayStore.from_settings(settings).add_key("bench")
    port = _port()
    gateway = subprocess.Popen(
        [
            sys.executable,
            *(["-m", "cProfile", "-o", str(args.profile)] if args.profile else []),
            "-m",
            "pipelines.cli",
            "gateway",
            "--port",
            str(port),
        ],  # fmt: skip
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    global GATEWAY_PID
    GATEWAY_PID = gateway.pid
    gw = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {key}"}
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(gw + "/v1/models", headers=auth, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if gateway.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"the gateway did not start: {gateway.stderr.read() if gateway.stderr else ''}"
                )
            time.sleep(0.3)
        n = args.requests
        results = {c: run_cases(system_a.url, gw, auth, n, c, args.cases) for c in args.clients}
    finally:
        # SIGINT: uvicorn shuts down and re-raises it as KeyboardInterrupt, so cProfile still writes its file
        # (SIGTERM's default action would end the process before that)
        gateway.send_signal(signal.SIGINT)
        gateway.wait(60)
        system_a.stop()
        if _POOL is not None:
            _POOL.shutdown()  # before the interpreter tears down what its manager thread needs
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    for c, (cases, search) in results.items():
        report(cases, search, n, c, machine)
    return 0


def run_cases(
    system_a: str, gw: str, auth: dict[str, str], n: int, c: int, which: Sequence[str] = CASES
) -> tuple[dict[str, tuple[list[float], list[float]]], list[float]]:
    """Each case's (direct, through the gateway) latencies and the search latencies, at ``c`` clients."""
    msgs = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}] for i in range(n)]
    direct = system_a + "/v1/chat/completions"
    via = gw + "/v1/chat/completions"
    warm = [{"model": "catalysis", "messages": m} for m in msgs]
    plain = [{**b, "temperature": 0.7} for b in warm]
    cached = [{**b, "temperature": 0} for b in warm]
    streamed = [{**b, "stream": True} for b in warm]
    pairs = {
        "plain": lambda: _pair((direct, plain, {}), (via, plain, auth), c, False, case="plain"),
        "cached": lambda: _pair((direct, cached, {}), (via, cached, auth), c, False, case="cached"),
        "stream": lambda: _pair((direct, streamed, {}), (via, streamed, auth), c, True, case="stream"),
        "rag": lambda: _pair(
            (direct, warm, {}),
            (via, [{**b, "model": "catalysis+rag"} for b in warm], auth),
            c,
            False,
            case="rag",
        ),
    }
    cases = {name: pair() for name, pair in pairs.items() if name in which}
    if "search" not in which:
        return cases, []
    search = (
        _generator()
        .submit(
            _load,
            gw + "/v1/search",
            [{"q": QUESTIONS[i % len(QUESTIONS)], "k": 5} for i in range(n)],
            auth,
            c,
            False,
            "GET",
        )
        .result()
    )
    return cases, search


def report(
    cases: dict[str, tuple[list[float], list[float]]], search: list[float], n: int, c: int, machine: str
) -> None:
    out = {}
    for name, (d, g) in cases.items():
        row = {
            "case": name,
            "requests": n,
            "clients": c,
            "direct_p50_ms": round(_pct(d, 0.5), 2),
            "direct_p95_ms": round(_pct(d, 0.95), 2),
            "gateway_p50_ms": round(_pct(g, 0.5), 2),
            "gateway_p95_ms": round(_pct(g, 0.95), 2),
            "added_p50_ms": round(_pct(g, 0.5) - _pct(d, 0.5), 2),
            "added_p95_ms": round(_pct(g, 0.95) - _pct(d, 0.95), 2),
            "gateway_cpu_ms_per_request": round(sum(CPU_MS.get((name, c), (0.0, 0.0))), 3),
            "of_it_system_ms": round(CPU_MS.get((name, c), (0.0, 0.0))[1], 3),
            "machine": machine,
        }
        out[name] = row
        print(json.dumps(row))
    summary: dict[str, object] = {"clients": c}
    if "plain" in out:
        added = out["plain"]["added_p95_ms"]
        summary.update(
            plain_added_p95_ms=added, plain_goal_10ms_met=added <= 10.0, plain_goal_5ms_met=added <= 5.0
        )
    if "cached" in out:
        summary["cached_p95_ms"] = out["cached"]["gateway_p95_ms"]
    if search:
        s95 = _pct(search, 0.95)
        print(json.dumps({"case": "search", "requests": n, "clients": c, "p50_ms": round(statistics.median(search), 2),
                          "p95_ms": round(s95, 2), "machine": machine}))  # fmt: skip
        if "rag" in out:
            added = out["rag"]["added_p95_ms"]
            summary.update(
                rag_added_p95_ms=added, rag_goal_ms=round(s95 + 10, 2), rag_goal_met=added <= s95 + 10
            )
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
