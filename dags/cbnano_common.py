"""Shared wiring for the CB Nano DAGs: default task arguments and the Assets the DAGs exchange.

Not a DAG file (it defines no DAG); the DAGs import it from the dags folder, which Airflow puts on sys.path.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import Asset

DEFAULT_ARGS = {
    "owner": "cbnano",
    "retries": 3,
    # First retry after 2 minutes, then doubling; CBNANO_RETRY_DELAY_S shortens it (the native lab test).
    "retry_delay": timedelta(seconds=float(os.environ.get("CBNANO_RETRY_DELAY_S", "120"))),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
}

# The RAG corpus in Milvus, one Asset per source; downstream DAGs schedule on these.
ARXIV_CORPUS = Asset(name="cbnano_corpus_arxiv", uri="cbnano://corpus/arxiv", group="corpus")
PUBCHEM_CORPUS = Asset(name="cbnano_corpus_pubchem", uri="cbnano://corpus/pubchem", group="corpus")

DEFAULT_CATEGORIES = ["cond-mat.mtrl-sci", "physics.chem-ph"]
CATEGORY_CHOICES = [
    "cond-mat.mtrl-sci", "physics.chem-ph", "cond-mat.soft", "cond-mat.stat-mech", "physics.app-ph",
    "cond-mat.supr-con", "cond-mat.mes-hall", "physics.comp-ph",
]

DOMAINS = ["chemistry", "materials", "thermal", "catalysis"]
# One Asset per domain's published model (the production pointer in the model store).
MODEL_ASSETS = {d: Asset(name=f"cbnano_model_{d}", uri=f"cbnano://models/{d}", group="models") for d in DOMAINS}
