"""Retrieval quality on a golden set: queries with the documents that answer them.

The set shipped in ``include/retrieval/`` holds a small corpus (``corpus.jsonl``: documents as the platform
indexes them) and ``queries.jsonl`` (``id``, ``kind``, ``query``, ``relevant`` doc ids). Kinds:
``identifier`` (a formula, CAS number or arXiv id as typed), ``paraphrase`` (the content in other words) and
``cross_source`` (a compound and the papers about it). Relevance is binary.

Metrics per query, averaged per kind and overall: recall@5 (share of the relevant documents in the top 5),
MRR@10 (1 / rank of the first relevant document, 0 beyond 10) and nDCG@10 (binary gains, log2 discount).

Usage::

    queries = load_queries(golden_path("queries.jsonl"))
    report = evaluate(lambda q, mode: [r.doc_id for r in searcher.search(parse_query(q, 10, mode)).results],
                      queries, modes=("dense", "hybrid"))
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from pipelines.assets import asset
from pipelines.documents import Document
from pipelines.settings import Settings


def golden_path(name: str) -> Path:
    """A file of the golden set, ``include/retrieval/<name>`` (``corpus.jsonl``, ``queries.jsonl``)."""
    return asset("include", "retrieval", name)


KINDS = ("identifier", "paraphrase", "cross_source")


@dataclass(frozen=True)
class GoldenQuery:
    """One query and the ids of the documents that answer it."""

    id: str
    kind: str
    query: str
    relevant: tuple[str, ...]


def load_corpus(path: Path) -> list[Document]:
    """The golden corpus as :class:`Document` objects."""
    docs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            docs.append(
                Document(
                    source=row["source"],
                    doc_id=row["doc_id"],
                    title=row["title"],
                    text=row["text"],
                    url=row["url"],
                    published=row.get("published", ""),
                    categories=tuple(row.get("categories", ())),
                )
            )
    return docs


def load_queries(path: Path) -> list[GoldenQuery]:
    """The golden queries; raises ValueError on an unknown kind or a query without relevant documents."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row["kind"] not in KINDS or not row["relevant"]:
            raise ValueError(f"{path}:{n}: kind must be one of {KINDS} and relevant non-empty")
        out.append(GoldenQuery(row["id"], row["kind"], row["query"], tuple(row["relevant"])))
    return out


def recall_at(ranked: Sequence[str], relevant: Sequence[str], k: int) -> float:
    """Share of ``relevant`` found in the first ``k`` of ``ranked``."""
    return len(set(ranked[:k]) & set(relevant)) / len(set(relevant))


def reciprocal_rank(ranked: Sequence[str], relevant: Sequence[str], k: int = 10) -> float:
    """1 / rank of the first relevant id within the first ``k`` (0 when none)."""
    return next((1.0 / i for i, d in enumerate(ranked[:k], 1) if d in relevant), 0.0)


def ndcg_at(ranked: Sequence[str], relevant: Sequence[str], k: int = 10) -> float:
    """Normalised discounted cumulative gain with binary relevance."""
    dcg = sum(1.0 / math.log2(i + 1) for i, d in enumerate(ranked[:k], 1) if d in relevant)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(k, len(set(relevant))) + 1))
    return dcg / ideal


class GoldenReport(TypedDict):
    """The golden-set evaluation: mode → query kind (and ``all``) → metric → value, and query id → mode → its
    top ten document ids."""

    metrics: dict[str, dict[str, dict[str, float]]]
    rankings: dict[str, dict[str, list[str]]]


def evaluate(
    rank: Callable[[str, str], list[str]], queries: Sequence[GoldenQuery], modes: Sequence[str]
) -> GoldenReport:
    """Metrics per mode and kind (``all`` too), and each query's ranked ids: ``rank(query, mode)`` → ids."""
    report: GoldenReport = {"metrics": {}, "rankings": {}}
    for mode in modes:
        per_kind: dict[str, list[tuple[float, float, float]]] = {}
        for q in queries:
            ranked = rank(q.query, mode)
            report["rankings"].setdefault(q.id, {})[mode] = ranked[:10]
            scores = (
                recall_at(ranked, q.relevant, 5),
                reciprocal_rank(ranked, q.relevant, 10),
                ndcg_at(ranked, q.relevant, 10),
            )
            per_kind.setdefault(q.kind, []).append(scores)
            per_kind.setdefault("all", []).append(scores)
        report["metrics"][mode] = {
            kind: {
                "queries": len(rows),
                "recall@5": round(sum(r[0] for r in rows) / len(rows), 3),
                "mrr@10": round(sum(r[1] for r in rows) / len(rows), 3),
                "ndcg@10": round(sum(r[2] for r in rows) / len(rows), 3),
            }
            for kind, rows in per_kind.items()
        }
    return report


def hybrid_verdict(metrics: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """What the platform asks of hybrid search against dense, as failures (empty: both hold): beat dense on
    identifier queries, and not lose to it on paraphrases (MRR@10 on the golden set)."""
    out = []
    dense, hybrid = metrics["dense"], metrics["hybrid"]
    if not hybrid["identifier"]["mrr@10"] > dense["identifier"]["mrr@10"]:
        out.append("hybrid does not beat dense on identifier queries (MRR@10)")
    if hybrid["paraphrase"]["mrr@10"] < dense["paraphrase"]["mrr@10"]:
        out.append("hybrid loses to dense on paraphrase queries (MRR@10)")
    return out


def evaluate_golden(
    settings: Settings, modes: Sequence[str] = ("dense", "keyword", "hybrid")
) -> GoldenReport:
    """Index the golden corpus into the configured collection (the platform's own indexing path) and
    evaluate ``modes`` on the golden queries; returns :func:`evaluate`'s report."""
    from pipelines.embedding.minilm import DIMENSION, get_embedder
    from pipelines.ingestion.indexing import index_documents
    from pipelines.retrieval.search import Searcher, parse_query
    from pipelines.vectorstore.milvus import MilvusStore

    def factory() -> Any:
        return get_embedder(
            settings.embedding_model, settings.embedding_device, settings.embedding_batch_size
        )

    with MilvusStore.from_settings(settings) as store:
        store.ensure_collection(DIMENSION.get(settings.embedding_model) or factory().dimension)
        index_documents(load_corpus(golden_path("corpus.jsonl")), store, factory, settings.embedding_model)
    queries = load_queries(golden_path("queries.jsonl"))
    with Searcher.from_settings(settings) as searcher:
        return evaluate(
            lambda q, mode: [r.doc_id for r in searcher.search(parse_query(q, 10, mode)).results],
            queries,
            modes,
        )
