"""`dag.test()` of literature_ingestion against the replay server, with real MiniLM and Milvus Lite."""

import pendulum
import pytest

from pipelines.settings import get_settings
from pipelines.vectorstore.milvus import MilvusStore

pytestmark = pytest.mark.integration


def without_deadline(dag):
    """dag.test() in Airflow 3.3.2 cannot run a DAG with a DeadlineAlert (it looks the alert object up as a DB
    id: "'dict' object has no attribute 'hex'"); the scheduler path, used by tests/cluster and tests/browser,
    handles it. The deadline itself is checked in tests/dags."""
    dag.deadline = []
    return dag


def states(run):
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_each_run_ingests_its_own_interval(airflow_db, replay):
    replay()
    from literature_ingestion import literature_ingestion_dag

    dag = without_deadline(literature_ingestion_dag)

    # interval [11-25 02:00, 11-26 02:00): only the paper submitted at 23:59 on the 25th
    run1 = dag.test(logical_date=pendulum.datetime(2026, 11, 26, 2, tz="UTC"))
    assert str(run1.state) == "success", states(run1)
    with MilvusStore.from_settings(get_settings()) as store:
        assert store.stats()["sources"]["arxiv"]["documents"] == 1

    # the next night: the papers of [11-26 02:00, 11-27 02:00)
    run2 = dag.test(logical_date=pendulum.datetime(2026, 11, 27, 2, tz="UTC"))
    assert str(run2.state) == "success", states(run2)
    assert states(run2) == {"fetch": "success", "stage": "success", "embed_and_upsert": "success"}
    with MilvusStore.from_settings(get_settings()) as store:
        docs = store.stats()["sources"]["arxiv"]["documents"]
        assert docs == 8
        ids = {
            r["doc_id"]
            for r in store.client.query(
                store.collection, filter='source == "arxiv"', output_fields=["doc_id"]
            )
        }
        assert "2611.09999" in ids and "2611.10008" not in ids  # cs.LG is not a requested category


def test_manual_dry_run_with_window_override(airflow_db, replay):
    replay()
    from literature_ingestion import literature_ingestion_dag

    dag = without_deadline(literature_ingestion_dag)

    run = dag.test(
        logical_date=pendulum.datetime(2026, 11, 20, 2, tz="UTC"),
        run_conf={
            "window_start": "2026-11-25",
            "window_end": "2026-11-27",
            "dry_run": True,
            "categories": ["physics.chem-ph"],
        },
    )
    assert states(run) == {"fetch": "success", "stage": "success", "embed_and_upsert": "skipped"}
    staged = list(get_settings().data_dir.glob("arxiv/2026-11-25/*/records.jsonl"))
    assert (
        len(staged) == 1 and staged[0].read_text().count("\n") == 5
    )  # chem-ph papers (primary or cross-listed) of the two days
    with MilvusStore.from_settings(get_settings()) as store:
        assert not store.exists()


def test_tasks_take_milvus_and_the_webhook_from_the_airflow_connections(
    airflow_db, replay, monkeypatch, tmp_path
):
    """The deployment creates Connections (cbnano_milvus, cbnano_alerts_webhook, ...): the DAGs use them."""
    import json

    replay()
    from literature_ingestion import literature_ingestion_dag

    dag = without_deadline(literature_ingestion_dag)
    conn_db = tmp_path / "from-the-connection" / "milvus.db"
    conn_db.parent.mkdir()
    monkeypatch.setenv(
        "AIRFLOW_CONN_CBNANO_MILVUS", json.dumps({"conn_type": "generic", "host": str(conn_db)})
    )
    # a logical date no other test uses (dag.test returns an existing run of the same date as it is)
    run = dag.test(
        logical_date=pendulum.datetime(2026, 11, 12, 2, tz="UTC"),
        run_conf={
            "window_start": "2026-11-26",
            "window_end": "2026-11-27",
            "dry_run": False,
            "categories": ["cond-mat.mtrl-sci", "physics.chem-ph"],
        },
    )
    assert states(run) == {"fetch": "success", "stage": "success", "embed_and_upsert": "success"}
    assert not (get_settings().home / "milvus.db").exists()  # not the environment's default
    with MilvusStore(str(conn_db), get_settings().milvus_collection) as store:
        assert store.count() > 0
