"""The lab topology for real: CeleryExecutor over Postgres and Redis, one worker per host role.

Triggers the DAGs through Airflow's REST API against the replay server and checks where each task ran; kills
System C's worker in the middle of an embedding task and checks that the retry on a restarted worker leaves
every chunk in Milvus exactly once. Needs root and the Debian packages of ``scripts/system_deps.sh``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from native_lab import PG_BIN, NativeLab, wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
DAY = datetime(2026, 10, 5, tzinfo=UTC)
N_PAPERS = 400


def _missing_prerequisites() -> list[str]:
    missing = [tool for tool in ("unshare", "runuser", "redis-server") if not shutil.which(tool)]
    if not (PG_BIN / "postgres").exists():
        missing.append(str(PG_BIN / "postgres"))
    if os.geteuid() != 0:
        missing.append("root")
    return missing


@pytest.fixture(scope="module")
def lab():
    if missing := _missing_prerequisites():
        pytest.fail(f"the native lab needs {', '.join(missing)}: run scripts/system_deps.sh (make test does)")
    from pipelines.replay import ReplayServer

    sys.path.insert(0, str(ROOT / "bench"))
    from corpus import write_window

    work = Path(tempfile.mkdtemp(prefix="cbnano-lab-home-"))
    write_window(work / "window.xml", N_PAPERS, DAY, seed=5)
    replay = ReplayServer(corpus=[work / "window.xml"]).start()
    lab = NativeLab(
        {
            "CBNANO_HOME": str(work / "home"),
            "CBNANO_ARXIV_API_URL": replay.arxiv_api_url,
            "CBNANO_ARXIV_DELAY_S": "0",
            "CBNANO_PUBCHEM_URL": replay.pubchem_url,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    try:
        lab.start()
        yield lab
    except BaseException:
        for name in ("api-server", "scheduler", "dag-processor", "worker-system_c"):
            print(f"--- {name} ---\n{lab.log_tail(name)}")
        raise
    finally:
        lab.stop()
        replay.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _task_log(lab: NativeLab, dag_id: str, run_id: str, task_id: str, attempt: int) -> Path:
    return (
        Path(lab.env["AIRFLOW_HOME"])
        / "logs"
        / f"dag_id={dag_id}"
        / f"run_id={run_id}"
        / f"task_id={task_id}"
        / f"attempt={attempt}.log"
    )


def test_ingestion_runs_on_its_queues_and_survives_losing_system_c(lab):
    lab.wait_for_dag("literature_ingestion")
    run_id = lab.trigger("literature_ingestion", {"window_start": "2026-10-05", "window_end": "2026-10-06"})

    # Wait until System C's task has written its first batch of vectors, then take the host away.
    first_try = _task_log(lab, "literature_ingestion", run_id, "embed_and_upsert", 1)

    def first_batch_written() -> bool:
        lab.check_alive()
        return first_try.exists() and "embed: 256/" in first_try.read_text(errors="replace")

    wait_for(first_batch_written, 420, "the first embedding batch")
    lab.kill("worker-system_c")
    killed_at = time.monotonic()
    lab.start_worker("system_c")

    assert lab.wait_for_run("literature_ingestion", run_id, 600) == "success", lab.task_instances(
        "literature_ingestion", run_id
    )
    print(f"recovered {time.monotonic() - killed_at:.0f} s after the kill")
    tis = lab.task_instances("literature_ingestion", run_id)
    where = {t: (ti["queue"], ti["hostname"], ti["state"]) for t, ti in tis.items()}
    assert where == {
        "fetch": ("default", "coordinator", "success"),
        "stage": ("default", "coordinator", "success"),
        "embed_and_upsert": ("system_c", "system-c", "success"),
    }
    assert tis["embed_and_upsert"]["try_number"] == 2
    assert "embed: " in _task_log(lab, "literature_ingestion", run_id, "embed_and_upsert", 2).read_text()

    # Every chunk of every staged paper is in Milvus once: nothing lost to the kill, nothing doubled.
    from pipelines.documents import chunk_text
    from pipelines.embedding.minilm import get_embedder
    from pipelines.ingestion.arxiv import record_document
    from pipelines.lake import read_jsonl
    from pipelines.settings import get_settings, reset_settings_cache
    from pipelines.vectorstore.milvus import MilvusStore

    os.environ["CBNANO_HOME"] = lab.env["CBNANO_HOME"]
    reset_settings_cache()
    settings = get_settings()
    records = list(settings.data_dir.glob("arxiv/2026-10-05/*/records.jsonl"))
    assert len(records) == 1
    docs = [record_document(r) for r in read_jsonl(records[0])]
    assert len(docs) == N_PAPERS
    emb = get_embedder(settings.embedding_model)
    expected = sorted(
        c.chunk_id for d in docs for c in chunk_text(d.text, d.doc_id, d.source, emb.token_offsets)
    )
    with MilvusStore.from_settings(settings) as store:
        rows = store.client.query(
            store.collection, filter='source == "arxiv"', output_fields=["chunk_id"], limit=16384
        )
        assert store.count() == len(expected)
    assert sorted(r["chunk_id"] for r in rows) == expected
    del os.environ["CBNANO_HOME"]
    reset_settings_cache()


def test_retraining_dry_run_lands_on_system_b(lab):
    """domain_retraining's mapped task runs on System B's queue (a dry run: the dataset, no training)."""
    lab.wait_for_dag("domain_retraining")
    run_id = lab.trigger(
        "domain_retraining",
        {"domains": ["catalysis"], "dry_run": True, "month": "2026-10", "profile": "tiny"},
    )
    state = lab.wait_for_run("domain_retraining", run_id, 600)
    tis = lab.task_instances("domain_retraining", run_id)
    assert state == "success", {t: ti["state"] for t, ti in tis.items()}
    assert (tis["plan"]["queue"], tis["plan"]["hostname"]) == ("default", "coordinator")
    mapped = tis["retrain_domain[0]"]
    assert (mapped["queue"], mapped["hostname"], mapped["state"]) == ("system_b", "system-b", "skipped")
    log = _task_log(lab, "domain_retraining", run_id, "retrain_domain", 1)
    assert "dry run: catalysis dataset of" in "".join(p.read_text() for p in log.parent.rglob("*.log"))


def test_the_gateways_key_and_trace_store_on_the_labs_postgres(lab):
    """The gateway's database as the compose file configures it: tables beside Airflow's in the coordinator's
    Postgres (CBNANO_GATEWAY_DB). Keys, traces, feedback and the +rag rating query, from two store objects
    (two gateway processes) at once."""
    from pipelines.ops.traces import GatewayStore, Trace

    url = f"postgresql+psycopg2://airflow:airflow@127.0.0.1:{lab.pg_port}/airflow"
    first, second = GatewayStore(url), GatewayStore(url)
    key = first.add_key("alice")
    assert second.user_for(key) == "alice" and second.user_for(key + "x") is None
    assert "airflow:airflow" not in repr(first)
    t = Trace(user="alice", endpoint="chat", model="catalysis+rag", status=200, latency_ms=41.0, tokens_in=120,
              tokens_out=18, sources=["2611.08115", "2611.08102"], answer="Ni on ceria [1].", question="Which?")  # fmt: skip
    first.record(t)
    second.record(
        Trace(user="alice", endpoint="embeddings", model="all-MiniLM-L6-v2", status=200, latency_ms=3.0)
    )
    first.flush()  # each store writes its traces from a background thread; another process sees them after it
    assert second.feedback(t.id, "alice", -1, "wrong support") and not second.feedback("cbn-none", "alice", 1)
    rows = {r["id"]: r for r in first.traces(since="2000-01-01")}
    assert rows[t.id]["sources"] == ["2611.08115", "2611.08102"] and rows[t.id]["rating"] == -1
    assert [r["comment"] for r in first.rated("catalysis", -1)] == ["wrong support"]
    assert [k["user"] for k in first.keys()] == ["alice"] and first.keys()[0]["last_used_at"]
    first.revoke("alice")
    assert second.user_for(key) is None
