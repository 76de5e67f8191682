"""Shared wiring for the CB Nano DAGs: default task arguments and the Assets the DAGs exchange.

Not a DAG file (it defines no DAG); the DAGs import it from the dags folder, which Airflow puts on sys.path.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import pendulum
from airflow.sdk import Asset, AsyncCallback, BaseNotifier, DeadlineAlert, DeadlineReference, Param


class FailureAlert(BaseNotifier):
    """On a task's final failure: a webhook post and/or an e-mail (``CBNANO_ALERT_*``), else a log line."""

    def notify(self, context):
        from pipelines.ops.alerts import send_alert

        ti = context["ti"]
        error = context.get("exception")
        send_alert(
            dag_settings(),
            f"{ti.dag_id}.{ti.task_id} failed",
            f"{type(error).__name__}: {error}"[:1000] if error else "the task failed",
            {
                "dag": ti.dag_id,
                "task": ti.task_id,
                "run": ti.run_id,
                "try": ti.try_number,
                "map_index": ti.map_index,
            },
        )


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
        callback=AsyncCallback(
            "cbnano_common.deadline_missed",
            kwargs={
                "dag_id": dag_id,
                "deadline": f"{hours:g} h after it was queued",
                "message": f"{dag_id} has not finished {hours:g} h after it was queued",
            },
        ),
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

# What every CB Nano DAG shares: its first interval, no automatic catch-up (backfills are asked for), one run at a
# time, and the retries and failure alert above. A DAG passes it as ``@dag(..., **DAG_COMMON)``.
DAG_COMMON = {
    "start_date": pendulum.datetime(2026, 11, 1, tz="UTC"),
    "catchup": False,
    "max_active_runs": 1,
    "default_args": DEFAULT_ARGS,
}

# Nightly ingestion is queued at 02:00 UTC: by default, alert if it is not done by 06:00.
INGEST_DEADLINE_H = float(os.environ.get("CBNANO_INGEST_DEADLINE_H", "4"))

# The RAG corpus in Milvus, one Asset per source; downstream DAGs schedule on these.
ARXIV_CORPUS = Asset(name="cbnano_corpus_arxiv", uri="cbnano://corpus/arxiv", group="corpus")
PUBCHEM_CORPUS = Asset(name="cbnano_corpus_pubchem", uri="cbnano://corpus/pubchem", group="corpus")

# The forms' choices and defaults. DAG files import nothing from pipelines at parse time (tests/dags checks), so
# these mirror the one definition of each in pipelines: DEFAULT_CATEGORIES (pipelines.sources.arxiv), DOMAINS,
# TRAIN_PROFILES and DEFAULT_TRAIN_PROFILE (pipelines.settings), MIN_GAIN (pipelines.evaluation.gate);
# tests/unit/training/test_configs.py checks that each copy equals its definition. CATEGORY_CHOICES are the
# form's offer (checked against arXiv's taxonomy there). The defaults follow the worker's settings.
DEFAULT_CATEGORIES = ["cond-mat.mtrl-sci", "physics.chem-ph"]
CATEGORY_CHOICES = [
    "cond-mat.mtrl-sci",
    "physics.chem-ph",
    "cond-mat.soft",
    "cond-mat.stat-mech",
    "physics.app-ph",
    "cond-mat.supr-con",
    "cond-mat.mes-hall",
    "physics.comp-ph",
]

DOMAINS = ["chemistry", "materials", "thermal", "catalysis"]
TRAIN_PROFILES = ["tiny", "cpu_lora", "gpu_qlora"]
TRAIN_PROFILE = os.environ.get("CBNANO_TRAIN_PROFILE") or "gpu_qlora"
BASE_MODEL = os.environ.get("CBNANO_BASE_MODEL") or None
MIN_GAIN = 0.02
# One Asset per domain's published model (the production pointer in the model store).
MODEL_ASSETS = {
    d: Asset(name=f"cbnano_model_{d}", uri=f"cbnano://models/{d}", group="models") for d in DOMAINS
}


def domains_param(description):
    """The forms' domain multi-select: every domain by default, choices limited to the domains."""
    return Param(DOMAINS, type="array", items={"type": "string", "enum": DOMAINS}, description=description)


def day_param(description, title=None):
    """An optional day (YYYY-MM-DD) in a form: a date picker, empty by default."""
    extra = {"title": title} if title else {}
    return Param(None, type=["null", "string"], format="date", description=description, **extra)


def _connection(conn_id):
    """The Airflow Connection ``conn_id``, or None when it is not defined."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    except Exception as exc:  # outside a task (no execution API to ask): the environment's settings apply
        logging.getLogger(__name__).debug("connection %s not readable here: %s", conn_id, exc)
        return None


def _url(conn, default_port):
    """A URL from a Connection whose host holds either a whole URL or a host name."""
    host = conn.host or ""
    if not host or "://" in host:
        return host
    return f"http://{host}:{conn.port or default_port}"


def dag_settings():
    """The platform settings, with the secrets and endpoints of the Airflow Connections the deployment creates
    taking precedence over the environment (call inside a task or callback):

    * ``cbnano_milvus``: host = Milvus URI, password = token;
    * ``cbnano_smtp``: host (and port), login, password;
    * ``cbnano_alerts_webhook``: host = the webhook URL;
    * ``cbnano_system_a``: host = vLLM's URL, password = token.

    An empty field keeps the environment's value; a missing Connection changes nothing.
    """
    from dataclasses import replace

    from pipelines.settings import get_settings

    settings = get_settings()
    changes = {}
    if conn := _connection("cbnano_milvus"):
        if conn.host:
            changes["milvus_uri"] = _url(conn, 19530) if not conn.host.startswith("/") else conn.host
        if conn.password:
            changes["milvus_token"] = conn.password
    if conn := _connection("cbnano_smtp"):
        if conn.host:
            changes["smtp_host"] = f"{conn.host}:{conn.port}" if conn.port else conn.host
        if conn.login:
            changes["smtp_user"] = conn.login
        if conn.password:
            changes["smtp_password"] = conn.password
    if (conn := _connection("cbnano_alerts_webhook")) and conn.host:
        changes["alert_webhook_url"] = conn.host
    if conn := _connection("cbnano_system_a"):
        if conn.host:
            changes["system_a_url"] = _url(conn, 8000)
        if conn.password:
            changes["system_a_token"] = conn.password
    return replace(settings, **changes) if changes else settings
