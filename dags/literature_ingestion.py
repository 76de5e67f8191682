"""
### literature_ingestion

Nightly at 02:00 UTC: the arXiv papers **submitted** in this run's data interval (categories below), fetched
politely from the export API, staged in the data lake, embedded with all-MiniLM-L6-v2 and upserted into
Milvus. A backfill (`airflow backfill create --dag-id literature_ingestion --from-date ... --to-date ...`,
or the UI) re-ingests past intervals with the same code; unchanged papers cost no embedding and nothing is
duplicated.

Manual trigger: choose categories, optionally a window (`window_start`/`window_end`, days, end exclusive;
empty means yesterday), a cap on results, or a dry run (fetch and stage only). The run's summary (counts,
quarantined entries and why) is on the **CB Nano → Ingestion runs** page. Logic lives in `pipelines.ingestion.arxiv`.
"""

from __future__ import annotations

import logging

from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from cbnano_common import (
    ARXIV_CORPUS,
    CATEGORY_CHOICES,
    DAG_COMMON,
    DEFAULT_CATEGORIES,
    INGEST_DEADLINE_H,
    dag_settings,
    day_param,
    finish_deadline,
)


@dag(
    dag_id="literature_ingestion",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    **DAG_COMMON,
    deadline=finish_deadline("literature_ingestion", INGEST_DEADLINE_H),
    tags=["cbnano", "ingestion", "arxiv"],
    doc_md=__doc__,
    params={
        "categories": Param(
            DEFAULT_CATEGORIES,
            type="array",
            minItems=1,
            items={"type": "string", "enum": CATEGORY_CHOICES},
            uniqueItems=True,
            examples=CATEGORY_CHOICES,  # the UI renders `examples` as a multi-select
            title="arXiv categories",
            description="arXiv categories to ingest.",
        ),
        "window_start": day_param(
            "First day (YYYY-MM-DD). Empty: the run's data interval, or yesterday for a manual run without one.",
            title="Window start",
        ),
        "window_end": day_param(
            "Day after the last one (exclusive); needs window_start.", title="Window end"
        ),
        "max_results": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=30000,
            title="Max results",
            description="Stop after this many entries (default: the whole window).",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Fetch and stage only: no embedding, no Milvus.",
        ),
    },
)
def literature_ingestion():
    @task(pool="arxiv_api")
    def fetch() -> dict:
        from pipelines.ingestion.arxiv import fetch_window
        from pipelines.windows import resolve_window

        ctx = get_current_context()
        p = ctx["params"]
        start, end = resolve_window(
            ctx.get("data_interval_start"),
            ctx.get("data_interval_end"),
            p.get("window_start"),
            p.get("window_end"),
        )
        return fetch_window(dag_settings(), start, end, p["categories"], max_results=p.get("max_results"))

    @task
    def stage(fetched: dict) -> dict:
        from pipelines.ingestion.arxiv import stage_pages

        return stage_pages(fetched)

    @task(queue="system_c", pool="vector_store", outlets=[ARXIV_CORPUS])
    def embed_and_upsert(staged: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.ingestion.arxiv import record_document
        from pipelines.ingestion.indexing import index_staged, log_progress

        ctx = get_current_context()
        if ctx["params"].get("dry_run"):
            raise AirflowSkipException(f"dry run: {staged['rows']} records staged at {staged['uri']}")
        summary = index_staged(
            dag_settings(), staged, record_document, progress=log_progress(logging.getLogger("airflow.task"))
        )
        # compound_ingestion (scheduled on this Asset) mines these records for compound names
        ctx["outlet_events"][ARXIV_CORPUS].extra = {"records": staged["uri"], **summary}
        return summary

    embed_and_upsert(stage(fetch()))


literature_ingestion_dag = literature_ingestion()
