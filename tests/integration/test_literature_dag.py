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
        ids = {r["doc_id"] for r in store.client.query(store.collection, filter='source == "arxiv"',
                                                      output_fields=["doc_id"])}
        assert "2611.09999" in ids and "2611.10008" not in ids  # cs.LG is not a requested category


def test_manual_dry_run_with_window_override(airflow_db, replay):
    replay()
    from literature_ingestion import literature_ingestion_dag

    dag = without_deadline(literature_ingestion_dag)

    run = dag.test(logical_date=pendulum.datetime(2026, 11, 20, 2, tz="UTC"),
                   run_conf={"window_start": "2026-11-25", "window_end": "2026-11-27", "dry_run": True,
                             "categories": ["physics.chem-ph"]})
    assert states(run) == {"fetch": "success", "stage": "success", "embed_and_upsert": "skipped"}
    staged = list(get_settings().data_dir.glob("arxiv/2026-11-25/*/records.jsonl"))
    assert len(staged) == 1 and staged[0].read_text().count("\n") == 5  # chem-ph papers (primary or cross-listed) of the two days
    with MilvusStore.from_settings(get_settings()) as store:
        assert not store.exists()
