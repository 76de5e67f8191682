"""
### compound_ingestion

PubChem compounds into the RAG corpus (source `pubchem`, one document per CID) and the data lake (structured
records for the monthly training sets). Runs after every literature ingestion that changed the corpus
(scheduled on the `cbnano://corpus/arxiv` Asset): the compounds named in the newly ingested papers, plus the
lab's watch list (`include/pubchem_watchlist.csv`). Manual trigger: CIDs, names, watch list on/off, and an
optional window of papers to mine for compound names.

PubChem's usage policy (5 requests/s, 400/min, `X-Throttling-Control`) is enforced by the client; names
PubChem does not know are cached and not asked again for 30 days. Logic lives in `pipelines.ingestion.pubchem`.
"""

from __future__ import annotations

import logging

from airflow.sdk import Param, dag, get_current_context, task

from cbnano_common import ARXIV_CORPUS, DAG_COMMON, PUBCHEM_CORPUS, dag_settings, day_param


@dag(
    dag_id="compound_ingestion",
    schedule=[ARXIV_CORPUS],
    **DAG_COMMON,
    tags=["cbnano", "ingestion", "pubchem"],
    doc_md=__doc__,
    params={
        "cids": Param(
            [],
            type="array",
            items={"type": "integer", "minimum": 1},
            description="PubChem CIDs to (re)ingest, e.g. 2244.",
        ),
        "names": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Compound names or formulas to resolve, e.g. 'cerium oxide', 'LiPF6'.",
        ),
        "watchlist": Param(True, type="boolean", description="Include the lab's watch list."),
        "papers_start": day_param("Mine papers staged from this day (YYYY-MM-DD) for compound names."),
        "papers_end": day_param("...up to this day (exclusive); needs papers_start."),
        "dry_run": Param(False, type="boolean", description="Fetch and stage only: no embedding, no Milvus."),
    },
)
def compound_ingestion():
    @task
    def select() -> dict:
        from pipelines.ingestion.pubchem import select_names
        from pipelines.windows import resolve_window

        ctx = get_current_context()
        p = ctx["params"]
        window = None
        if p.get("papers_start") or p.get("papers_end"):
            window = resolve_window(None, None, p.get("papers_start"), p.get("papers_end"))
        # Asset-triggered runs: the literature runs name their staged records in the event's extra.
        records = [
            ev.extra["records"]
            for evs in (ctx.get("triggering_asset_events") or {}).values()
            for ev in evs
            if ev.extra and ev.extra.get("records")
        ]
        names = select_names(dag_settings(), p["names"], p["watchlist"], window, paper_records=records)
        return {
            "cids": p["cids"],
            "names": names,
            "papers": records,
            "papers_start": window[0].date().isoformat() if window else None,
        }

    @task(pool="pubchem_api")
    def fetch(selection: dict) -> dict:
        from pipelines.ingestion.pubchem import fetch_compounds
        from pipelines.windows import parse_day

        # the lake day: the papers window's first day, else the run's data interval (a backfill files under
        # its interval, not the day it ran), else the run's logical date / when it was queued (asset events)
        ctx = get_current_context()
        when = (
            selection.get("papers_start")
            or ctx.get("data_interval_start")
            or ctx.get("logical_date")
            or ctx["dag_run"].run_after
        )
        return fetch_compounds(
            dag_settings(), selection["cids"], selection["names"], day=parse_day(when).date()
        )

    @task
    def stage(fetched: dict) -> dict:
        from pipelines.ingestion.pubchem import stage_compounds

        return stage_compounds(fetched)

    @task(queue="system_c", pool="vector_store", outlets=[PUBCHEM_CORPUS])
    def embed_and_upsert(staged: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.ingestion.indexing import index_staged, log_progress
        from pipelines.ingestion.pubchem import record_document

        if get_current_context()["params"].get("dry_run"):
            raise AirflowSkipException(f"dry run: {staged['rows']} compounds staged at {staged['uri']}")
        return index_staged(
            dag_settings(), staged, record_document, progress=log_progress(logging.getLogger("airflow.task"))
        )

    embed_and_upsert(stage(fetch(select())))


compound_ingestion_dag = compound_ingestion()
