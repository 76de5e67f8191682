"""The platform's own lock around a Milvus Lite file: one process at a time, the holder named, no damage."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.embedding.minilm import MINILM, get_embedder
from pipelines.ingestion.indexing import index_documents
from pipelines.retrieval.golden import golden_path, load_corpus
from pipelines.vectorstore.lite_lock import holder
from pipelines.vectorstore.milvus import MilvusStore, VectorStoreError

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def cli(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def test_a_second_process_waits_then_fails_naming_the_holder_and_harms_nothing(cbnano_env, tmp_path):
    with MilvusStore.from_settings(cbnano_env) as store:
        store.ensure_collection(384)
        index_documents(
            load_corpus(golden_path("corpus.jsonl"))[:10], store, lambda: get_embedder(MINILM), MINILM
        )
    # closed: the file is free again (the embedded server stopped with the last store of this process)
    env = {**os.environ, "CBNANO_MILVUS_LOCK_WAIT_S": "1"}
    out = cli("stats", "--json", env=env)
    assert out.returncode == 0 and json.loads(out.stdout)["sources"]["arxiv"]["documents"] == 10

    port = 8600 + os.getpid() % 300
    holder_proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "search-service", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while holder(cbnano_env.milvus_uri).get("pid") != holder_proc.pid:
            assert holder_proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
        # another process: one line naming the holder, exit 1, never an empty corpus
        t0 = time.monotonic()
        out = cli("stats", "--json", env=env)
        assert out.returncode == 1 and out.stdout == ""
        err = out.stderr.strip()
        assert f"is in use by pid {holder_proc.pid}" in err and "search-service" in err and "\n" not in err
        assert 1 <= time.monotonic() - t0 < 60  # it waited CBNANO_MILVUS_LOCK_WAIT_S
        # this process too
        with pytest.raises(VectorStoreError, match=f"in use by pid {holder_proc.pid}"):
            MilvusStore(cbnano_env.milvus_uri, cbnano_env.milvus_collection, lock_wait_s=0.5).count()
        # the holder was not disturbed by the failed attempts: it still answers from its corpus
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/search?q=Li6PS5Cl&k=1", timeout=30
                ) as r:
                    assert json.loads(r.read())["results"][0]["doc_id"] == "2401.11023"
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
    finally:
        holder_proc.terminate()
        holder_proc.wait(timeout=30)
    out = cli("stats", "--json", env={**env, "CBNANO_MILVUS_LOCK_WAIT_S": "30"})
    assert out.returncode == 0 and json.loads(out.stdout)["sources"]["arxiv"]["chunks"] == 10


def test_stores_of_one_process_share_the_file(cbnano_env):
    a = MilvusStore.from_settings(cbnano_env)
    b = MilvusStore.from_settings(cbnano_env)
    a.ensure_collection(384)
    b.ensure_collection(384)
    a.close()
    assert b.count() == 0  # still open: the process keeps the file while any store has it
    assert holder(cbnano_env.milvus_uri)["pid"] == os.getpid()
    b.close()
    out = cli("stats", "--json", env={**os.environ, "CBNANO_MILVUS_LOCK_WAIT_S": "5"})
    assert out.returncode == 0, out.stderr
