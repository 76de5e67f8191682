"""One Milvus Lite file, several processes: the search service, the CLI and an ingestion at once, through the
file's shared server (pipelines.vectorstore.lite_server); a foreign holder named; a killed server replaced."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.embedding.minilm import MINILM, get_embedder
from pipelines.ingestion.indexing import index_documents
from pipelines.retrieval.golden import golden_path, load_corpus
from pipelines.vectorstore.lite_server import holder, lock_path, server_state, state_path
from pipelines.vectorstore.milvus import MilvusStore

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        cwd=ROOT,
        timeout=300,
    )


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of this process counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


def wait_for(predicate, timeout_s=60.0, what="the condition"):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def get_json(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def index_golden(settings, n=10):
    with MilvusStore.from_settings(settings) as store:
        store.ensure_collection(384)
        index_documents(
            load_corpus(golden_path("corpus.jsonl"))[:n], store, lambda: get_embedder(MINILM), MINILM
        )


def test_the_search_service_the_cli_and_an_ingestion_work_on_one_file_at_once(replay, cbnano_env):
    replay()  # the arXiv stand-in for the ingestion (its env is in os.environ)
    index_golden(cbnano_env)
    port = 8600 + os.getpid() % 300
    service = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "search-service", "--port", str(port)],
        env=dict(os.environ),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ingest = None
    try:

        def service_answers():
            assert service.poll() is None, "the search service exited"
            try:
                return get_json(f"http://127.0.0.1:{port}/search?q=Li6PS5Cl&k=1")["results"][0]["doc_id"]
            except OSError:
                return None

        wait_for(lambda: service_answers() == "2401.11023", 120, "the search service")
        ingest = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.cli",
                "ingest",
                "arxiv",
                "--start",
                "2026-11-26",
                "--end",
                "2026-11-27",
            ],
            env=dict(os.environ),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # while the ingestion runs: the CLI searches and the service answers, none of them waits for the others
        searches = 0
        while ingest.poll() is None:
            out = cli("search", "Li6PS5Cl argyrodite", "--json", "--top-k", "1")
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)[0]["doc_id"] == "2401.11023"
            assert service_answers() == "2401.11023"
            searches += 1
        assert searches >= 1  # at least one CLI search started while the ingestion ran
        stdout, stderr = ingest.communicate(timeout=300)
        assert ingest.returncode == 0, stderr
        summary = json.loads(stdout.strip().splitlines()[-1])
        assert summary["new"] == 7  # the window's eighth entry is a quarantined one, by design
        # the service sees what the ingestion wrote, and so does a later CLI call
        hits = get_json(f"http://127.0.0.1:{port}/search?q=perovskite+solar+cell+passivation&k=1")["results"]
        assert hits[0]["doc_id"] == "2611.10006"
        stats = json.loads(cli("stats", "--json").stdout)
        assert stats["sources"]["arxiv"]["documents"] == 10 + 7
        # one owner of the file the whole time: the shared server, not any of the three
        owner = holder(cbnano_env.milvus_uri)["pid"]
        assert owner == server_state(cbnano_env.milvus_uri)["pid"]
        assert owner not in (service.pid, ingest.pid, os.getpid()) and alive(owner)
    finally:
        if ingest is not None and ingest.poll() is None:
            ingest.kill()
        service.terminate()
        service.wait(timeout=30)


def test_a_foreign_holder_of_the_file_is_named_in_one_line_and_harms_nothing(cbnano_env, monkeypatch):
    index_golden(cbnano_env, n=3)
    owner = server_state(cbnano_env.milvus_uri)["pid"]
    wait_for(
        lambda: not alive(owner), 30, "the idle server to stop"
    )  # CBNANO_MILVUS_LITE_IDLE_S is short here
    # a process that is not a platform server holds the file (an older version's in-process Lite, a notebook)
    foreign = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from pipelines.lake import lock_file; "
            "assert lock_file(Path(sys.argv[1]), 5) is not None; print('held', flush=True); time.sleep(600)",
            str(lock_path(cbnano_env.milvus_uri)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert foreign.stdout.readline().strip() == "held"
        out = cli("stats", "--json", env={**os.environ, "CBNANO_MILVUS_LOCK_WAIT_S": "1"})
        assert out.returncode == 1 and out.stdout == ""
        err = out.stderr.strip()
        assert f"is in use by pid {foreign.pid}" in err and "\n" not in err and "Traceback" not in err
        assert "waited 1s" in err  # the setting's wait, not the default 120 s (said, not timed)
    finally:
        foreign.kill()
        foreign.wait()
    out = cli("stats", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sources"]["arxiv"]["chunks"] == 3  # nothing was damaged


def test_a_notebook_holding_the_file_is_waited_for_named_and_its_lock_left_alone(cbnano_env):
    """A notebook opened the file with milvus_lite itself (MilvusClient("<home>/milvus.db")): the CLI waits,
    fails in one line naming it, and never deletes the notebook's lock; once it closes, the CLI works."""
    from pipelines.vectorstore.lite_server import lite_lock_path

    index_golden(cbnano_env, n=2)
    owner = server_state(cbnano_env.milvus_uri)["pid"]
    wait_for(lambda: not alive(owner), 30, "the idle server to stop")
    notebook = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pymilvus import MilvusClient; c = MilvusClient(sys.argv[1]); "
            "print('open', flush=True); sys.stdin.readline(); c.close()",
            cbnano_env.milvus_uri,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lite_lock = lite_lock_path(str(Path(cbnano_env.milvus_uri).resolve()))
    try:
        assert notebook.stdout.readline().strip() == "open"
        inode = lite_lock.stat().st_ino
        out = cli("stats", "--json", env={**os.environ, "CBNANO_MILVUS_LOCK_WAIT_S": "1"})
        err = out.stderr.strip()
        assert out.returncode == 1 and f"is open in pid {notebook.pid}" in err and "\n" not in err
        assert "waited 1s" in err and "Traceback" not in err
        assert lite_lock.stat().st_ino == inode  # the notebook's lock file is still there, the same file
        assert notebook.poll() is None
    finally:
        notebook.communicate("\n", timeout=60)
    out = cli("stats", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sources"]["arxiv"]["chunks"] == 2


def kill_the_server(settings):
    """SIGKILL the file's shared server and wait until it is gone; returns its pid."""
    pid = server_state(settings.milvus_uri)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 30, "the killed server to go")
    return pid


def test_a_killed_server_is_replaced_and_the_data_is_intact(cbnano_env):
    index_golden(cbnano_env, n=4)
    with MilvusStore.from_settings(cbnano_env) as store:
        assert store.count("arxiv") == 4
        first = kill_the_server(cbnano_env)
    # the next client finds the dead server's state stale and starts a fresh one
    with MilvusStore.from_settings(cbnano_env) as store:
        assert store.count("arxiv") == 4
        second = server_state(cbnano_env.milvus_uri)["pid"]
    assert second != first and holder(cbnano_env.milvus_uri)["pid"] == second


def test_a_long_lived_client_reattaches_after_its_server_is_killed(cbnano_env, monkeypatch):
    """The search service and the gateway hold one store for hours: a killed server is replaced on their
    next call, not answered with errors until someone restarts them."""
    import pipelines.vectorstore.milvus as milvus

    monkeypatch.setattr(milvus, "LITE_CHECK_S", 0.0)  # check on every call (1 s in service)
    index_golden(cbnano_env, n=3)
    with MilvusStore.from_settings(cbnano_env) as store:
        assert store.count("arxiv") == 3
        first = kill_the_server(cbnano_env)
        assert store.count("arxiv") == 3  # the same store object, on a fresh server
        assert server_state(cbnano_env.milvus_uri)["pid"] not in (first, None)


def test_a_live_server_whose_state_file_was_lost_is_found_not_taken_for_a_stranger(cbnano_env):
    index_golden(cbnano_env, n=2)
    with MilvusStore.from_settings(cbnano_env) as store:
        assert store.count("arxiv") == 2
        live = server_state(cbnano_env.milvus_uri)["pid"]
        state_path(cbnano_env.milvus_uri).unlink()
        out = cli("stats", "--json", env={**os.environ, "CBNANO_MILVUS_LOCK_WAIT_S": "2"})
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["sources"]["arxiv"]["chunks"] == 2
        assert server_state(cbnano_env.milvus_uri)["pid"] == live  # the same server, its state rewritten


def test_stores_of_one_process_share_one_attachment_and_an_idle_server_stops(cbnano_env):
    a = MilvusStore.from_settings(cbnano_env)
    b = MilvusStore.from_settings(cbnano_env)
    a.ensure_collection(384)
    b.ensure_collection(384)
    owner = server_state(cbnano_env.milvus_uri)["pid"]
    a.close()
    assert b.count() == 0  # still attached: the process counts as one client while any store is open
    time.sleep(cbnano_env.milvus_lite_idle_s + 1)
    assert alive(owner)  # a client is attached: the server does not stop however long it waits
    b.close()
    wait_for(lambda: not alive(owner), 30, "the idle server to stop")
    assert (
        server_state(cbnano_env.milvus_uri) == {}
    )  # its state went with it; the next client starts a new one
    out = cli("stats", "--json")
    assert out.returncode == 0, out.stderr
