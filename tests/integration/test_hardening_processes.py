"""Issue 22's probe items that need real processes: Milvus Lite rows, the search service's access log, and a
retrain killed with SIGKILL. The rest are in ``tests/unit/test_hardening.py``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pipelines.documents import Document
from pipelines.ingestion.indexing import index_documents
from pipelines.vectorstore.milvus import MilvusStore

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DIM = 8


class _Embedder:
    """Deterministic 8-d vectors from the text: enough for Milvus, no model to load."""

    dimension = DIM

    def encode(self, texts):
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, t in enumerate(texts):
            for j, ch in enumerate(t.encode()[:64]):
                out[i, j % DIM] += ch
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)

    def token_offsets(self, text):
        import re

        return [m.span() for m in re.finditer(r"\S+", text)]


def _doc(doc_id, text, version=1, categories=("cond-mat.mtrl-sci",)):
    return Document(
        "arxiv",
        doc_id,
        f"title {doc_id}",
        text,
        url=f"https://arxiv.org/abs/{doc_id}",
        version=version,
        categories=list(categories),
        published="2026-11-25T00:00:00Z",
    )


@pytest.fixture
def lite(tmp_path):
    with MilvusStore(str(tmp_path / "milvus.db"), "hardening") as store:
        store.ensure_collection(DIM)
        yield store


def test_one_entry_milvus_cannot_hold_never_fails_its_batch(lite):
    docs = [_doc(f"2611.{i:05d}", f"a good abstract number {i}") for i in range(5)]
    docs.insert(2, _doc("2611.99999", "an entry with an absurd version", version=10**20))
    summary = index_documents(docs, lite, _Embedder, "test-model")
    assert (summary.new, summary.refused_documents) == (5, 1)
    assert lite.count("arxiv") == 5  # the good ones are in; the refused one is logged, not written


def test_two_long_ids_stay_two_documents_and_a_rerun_changes_nothing(lite):
    a, b = "x" * 140 + "/0000001", "x" * 140 + "/0000002"
    docs = [_doc(a, "the first long-id paper"), _doc(b, "the second long-id paper")]
    first = index_documents(docs, lite, _Embedder, "test-model")
    assert (first.new, first.chunks_upserted) == (2, 2)
    again = index_documents(docs, lite, _Embedder, "test-model")
    assert (again.new, again.unchanged, again.chunks_deleted) == (0, 2, 0)
    assert lite.stats()["sources"]["arxiv"]["documents"] == 2


def test_the_category_filter_does_not_match_a_piece_of_a_category(lite):
    docs = [
        _doc("2611.00001", "chemical physics paper", categories=("physics.chem-ph", "cond-mat.mtrl-sci")),
        _doc("2611.00002", "materials paper", categories=("cond-mat.mtrl-sci",)),
        _doc("2611.00003", "phonon paper", categories=("cond-mat.str-el", "physics.comp-ph")),
    ]
    index_documents(docs, lite, _Embedder, "test-model")
    vec = _Embedder().encode(["paper"])[0]

    def found(category):
        return sorted(h.doc_id for h in lite.search_dense(vec, 10, lite.filter_for(category=category)))

    assert found("ph") == [] and found("physics") == []
    assert found("physics.chem-ph") == ["2611.00001"]
    assert found("cond-mat.mtrl-sci") == ["2611.00001", "2611.00002"]
    assert found("physics.comp-ph") == ["2611.00003"]  # the last entry of the field


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_token_in_the_query_string_never_reaches_the_access_log(cbnano_env):
    port = _free_port()
    env = {**os.environ, "CBNANO_SEARCH_TOKEN": "the-real-token"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "search-service", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.3)
        for path in ("/healthz?token=query-s3cret", "/search?q=x&api_key=query-s3cret"):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read()
            except urllib.error.HTTPError:
                pass  # /search without the header is a 401: still logged
    finally:
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=60)
    assert "GET /healthz?token=***" in log and "api_key=***" in log
    assert "query-s3cret" not in log and "the-real-token" not in log


def test_a_killed_retrain_leaves_no_training_process_behind(tmp_path):
    """The parent (a task running axolotl) is killed with SIGKILL: the command's whole group ends with it."""
    pid_file = tmp_path / "worker.pid"
    worker = textwrap.dedent(
        f"""
        import subprocess, sys, time
        # a stand-in for axolotl: it starts a worker of its own, as data loaders do, and runs for minutes
        w = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(w.pid))
        time.sleep(600)
        """
    )
    parent = textwrap.dedent(
        f"""
        from pathlib import Path
        from pipelines.training.runner import _run
        _run([{sys.executable!r}, "-c", {worker!r}], dict(__import__("os").environ), Path({str(tmp_path / "train.log")!r}), None)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text().strip():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    grandchild = int(pid_file.read_text())
    os.kill(grandchild, 0)  # running
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        try:  # reap it if it became our zombie (it did not: it was re-parented), then look again
            os.waitpid(grandchild, os.WNOHANG)
        except ChildProcessError:
            pass
        state = Path(f"/proc/{grandchild}/stat")
        if state.is_file() and state.read_text().split()[2] == "Z":
            break  # a zombie is dead: only its exit status is left for init to collect
        time.sleep(0.2)
    else:
        os.kill(grandchild, signal.SIGKILL)
        pytest.fail("the training command's worker outlived its killed parent")
