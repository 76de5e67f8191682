"""Shared wiring for the CB Nano DAGs: default task arguments and the Assets the DAGs exchange.

Not a DAG file (it defines no DAG); the DAGs import it from the dags folder, which Airflow puts on sys.path.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import Asset, AsyncCallback, BaseNotifier, DeadlineAlert, DeadlineReference


class FailureAlert(BaseNotifier):
    """On a task's final failure: a webhook post and/or an e-mail (``CBNANO_ALERT_*``), else a log line."""

    def notify(self, context):
        from pipelines.ops.alerts import send_alert
        from pipelines.settings import get_settings

        ti = context["ti"]
        error = context.get("exception")
        send_alert(get_settings(), f"{ti.dag_id}.{ti.task_id} failed",
                   f"{type(error).__name__}: {error}"[:1000] if error else "the task failed",
                   {"dag": ti.dag_id, "task": ti.task_id, "run": ti.run_id, "try": ti.try_number,
                    "map_index": ti.map_index})


async def deadline_missed(context=None, **kwargs):
    """Deadline callback, run by the triggerer: alert on the failure channels (pipelines.ops.alerts)."""
    from pipelines.ops.alerts import deadline_missed as alert

    return await alert(context, **kwargs)


def finish_deadline(dag_id: str, hours: float) -> DeadlineAlert:
    """Alert (same channels as failures) when a run of ``dag_id`` is not done ``hours`` after it was queued."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=hours),
        # by dotted path, resolved in the triggerer: parsing the DAG imports nothing from pipelines
        callback=AsyncCallback("cbnano_common.deadline_missed",
                               kwargs={"dag_id": dag_id, "deadline": f"{hours:g} h after it was queued",
                                       "message": f"{dag_id} has not finished {hours:g} h after it was queued"}),
    )


DEFAULT_ARGS = {
    "owner": "cbnano",
    "retries": 3,
    # First retry after 2 minutes, then doubling; CBNANO_RETRY_DELAY_S shortens it (the native lab test).
    "retry_delay": timedelta(seconds=float(os.environ.get("CBNANO_RETRY_DELAY_S", "120"))),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
    "on_failure_callback": [FailureAlert()],
}

# Nightly ingestion is queued at 02:00 UTC: by default, alert if it is not done by 06:00.
INGEST_DEADLINE_H = float(os.environ.get("CBNANO_INGEST_DEADLINE_H", "4"))

# The RAG corpus in Milvus, one Asset per source; downstream DAGs schedule on these.
ARXIV_CORPUS = Asset(name="cbnano_corpus_arxiv", uri="cbnano://corpus/arxiv", group="corpus")
PUBCHEM_CORPUS = Asset(name="cbnano_corpus_pubchem", uri="cbnano://corpus/pubchem", group="corpus")

DEFAULT_CATEGORIES = ["cond-mat.mtrl-sci", "physics.chem-ph"]
CATEGORY_CHOICES = [
    "cond-mat.mtrl-sci", "physics.chem-ph", "cond-mat.soft", "cond-mat.stat-mech", "physics.app-ph",
    "cond-mat.supr-con", "cond-mat.mes-hall", "physics.comp-ph",
]

DOMAINS = ["chemistry", "materials", "thermal", "catalysis"]
# The retraining form's choices and defaults. DAG files import nothing from pipelines at parse time, so these
# mirror pipelines.settings (TRAIN_PROFILES, DEFAULT_TRAIN_PROFILE) and pipelines.evaluation.gate
# (DEFAULT_MIN_GAIN); tests/dags checks that they agree. The defaults follow the worker's settings.
TRAIN_PROFILES = ["tiny", "cpu_lora", "gpu_qlora"]
TRAIN_PROFILE = os.environ.get("CBNANO_TRAIN_PROFILE") or "gpu_qlora"
BASE_MODEL = os.environ.get("CBNANO_BASE_MODEL") or None
MIN_GAIN = 0.01
# One Asset per domain's published model (the production pointer in the model store).
MODEL_ASSETS = {d: Asset(name=f"cbnano_model_{d}", uri=f"cbnano://models/{d}", group="models") for d in DOMAINS}


def system_a_settings():
    """The platform settings with System A's URL and token from the Connection ``cbnano_system_a`` (host =
    URL, password = token) when it exists, else as the environment gives them. Call inside a task."""
    from dataclasses import replace

    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from pipelines.settings import get_settings

    settings = get_settings()
    try:
        conn = Connection.get("cbnano_system_a")
    except AirflowNotFoundException:
        return settings
    url = conn.host or ""
    if url and "://" not in url:
        url = f"http://{url}:{conn.port or 8000}"
    return replace(settings, system_a_url=url or settings.system_a_url,
                   system_a_token=conn.password or settings.system_a_token)
