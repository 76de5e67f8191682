"""Search the corpus: dense (MiniLM), keyword (Milvus BM25) or both fused, one result per document.

Hybrid is the default. Each ranker asks Milvus for its best chunk per document (``group_by_field``), and
the two document rankings are fused here by reciprocal rank fusion (score = sum of 1 / (60 + rank)). The
fusion is done per document rather than with Milvus's ``hybrid_search`` because that fuses chunks: Milvus
Lite returns several chunks of one document from it, and a document whose best dense chunk and best
keyword chunk differ would get no credit for matching both ways.

Usage::

    searcher = Searcher.from_settings(get_settings())
    answer = searcher.search(parse_query("Li6PS5Cl", top_k=5, since="2024-01-01"))
    [r.to_dict() for r in answer.results]
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypedDict

from pipelines.settings import Settings
from pipelines.terms import keyword_terms
from pipelines.vectorstore.milvus import Hit, MilvusStore

log = logging.getLogger(__name__)

MODES = ("hybrid", "dense", "keyword")
DEFAULT_MODE = "hybrid"
SOURCES = ("arxiv", "pubchem")
RRF_K = 60  # the constant of Cormack et al. (2009); larger flattens the rank differences
FUSION_DEPTH = 50  # documents each ranker contributes to the fusion (at least 4x top_k)
MAX_TOP_K = 100
MAX_QUERY_CHARS = 1000
SNIPPET_CHARS = 240
# below this cosine a dense hit is not close in meaning: on the golden corpus the top hit of 29 of 32 queries
# scored 0.39 or more (median 0.51; the 3 below 0.2 are identifiers, found by keyword), of unrelated topics
# ("banana bread recipe", "how to tune a guitar") 0.06-0.15. A hint to the user, not a filter
SIMILARITY_FLOOR = 0.25
_CATEGORY = re.compile(r"^[a-z\-]+(\.[A-Za-z\-]+)?\Z")


class SearchError(ValueError):
    """A search request the platform cannot run (bad parameter, nothing ingested); one readable line."""


@dataclass(frozen=True)
class Query:
    """A validated search request (dates as ``YYYYMMDD`` integers, 0 when open)."""

    text: str
    top_k: int = 5
    mode: str = DEFAULT_MODE
    source: str | None = None
    category: str | None = None
    since: int = 0
    until: int = 0


def _day(value: str | None, name: str) -> int:
    if not value:
        return 0
    try:
        return int(date.fromisoformat(value).strftime("%Y%m%d"))
    except ValueError:
        raise SearchError(f"{name} must be a date YYYY-MM-DD, not {value!r}") from None


def parse_query(
    text: str,
    top_k: int = 5,
    mode: str = DEFAULT_MODE,
    source: str | None = None,
    category: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Query:
    """A :class:`Query` from user input; raises :class:`SearchError` naming the bad parameter."""
    text = (text or "").strip()
    if not text:
        raise SearchError("the query is empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 on the command line arrive as lone surrogates
        raise SearchError("the query is not valid UTF-8 text") from None
    if len(text) > MAX_QUERY_CHARS:
        raise SearchError(f"the query is {len(text)} characters long; at most {MAX_QUERY_CHARS}")
    if not 1 <= top_k <= MAX_TOP_K:
        raise SearchError(f"top-k must be between 1 and {MAX_TOP_K}, not {top_k}")
    if mode not in MODES:
        raise SearchError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if source and source not in SOURCES:
        raise SearchError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    if category and not _CATEGORY.match(category):
        raise SearchError(f"category must look like an arXiv category (cond-mat.mtrl-sci), not {category!r}")
    lo, hi = _day(since, "since"), _day(until, "until")
    if lo and hi and lo > hi:
        raise SearchError(f"since ({since}) is after until ({until})")
    return Query(
        text=text,
        top_k=top_k,
        mode=mode,
        source=source or None,
        category=category or None,
        since=lo,
        until=hi,
    )


class ResultDict(TypedDict):
    """One result as ``cbnano search --json`` and the search service and gateway show it."""

    doc_id: str
    chunk_id: str
    title: str
    source: str
    score: float
    url: str
    published: str
    snippet: str
    ranks: dict[str, int]  # ranker → the document's rank in it


class SearchBody(TypedDict):
    """The body of ``GET /search`` (search service) and ``GET /v1/search`` (gateway)."""

    results: list[ResultDict]
    mode: str


@dataclass(frozen=True)
class Result(Hit):
    """One document found: its best chunk, the score (see :class:`Answer`), a snippet of the chunk, and the
    document's rank in each ranker that found it."""

    snippet: str = ""
    ranks: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> ResultDict:
        """The JSON shape of ``cbnano search --json`` and of the search service's results."""
        return {
            "doc_id": self.doc_id,
            "chunk_id": self.chunk_id,
            "title": self.title,
            "source": self.source,
            "score": round(self.score, 6),
            "url": self.url,
            "published": self.published,
            "snippet": self.snippet,
            "ranks": self.ranks,
        }


@dataclass(frozen=True)
class Answer:
    """The results of one query and the mode that produced them (hybrid falls back to dense on a Milvus
    without BM25). Scores are cosine similarity (dense), BM25 (keyword) or the fused RRF score (hybrid)."""

    results: list[Result]
    mode: str
    notes: list[str] = field(default_factory=list)  # why the results may not answer the query (see search)


def snippet(text: str, terms: list[str], width: int = SNIPPET_CHARS) -> str:
    """About ``width`` characters of ``text`` around the first query term found in it (else its start)."""
    flat = unicodedata.normalize("NFKC", text)
    low = flat.lower()
    hits = [i for t in terms if len(t) > 1 and (i := low.find(t)) >= 0]
    start = max(0, min(hits) - width // 3) if hits else 0
    if start:  # begin at a word
        space = flat.find(" ", start)
        start = space + 1 if 0 <= space < start + 20 else start
    end = min(len(flat), start + width)
    if end < len(flat):
        space = flat.rfind(" ", start, end)
        end = space if space > start + width // 2 else end
    return ("…" if start else "") + flat[start:end].strip() + ("…" if end < len(flat) else "")


def fuse(
    rankings: dict[str, list[Hit]], limit: int, k: int = RRF_K
) -> list[tuple[Hit, float, dict[str, int]]]:
    """Reciprocal rank fusion of per-document rankings: (best hit, fused score, ranks), best first.

    The hit shown for a document is the one from the first ranker in ``rankings`` that found it.
    """
    scores: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    shown: dict[str, Hit] = {}
    for name, hits in rankings.items():
        for rank, hit in enumerate(hits, 1):
            scores[hit.doc_id] = scores.get(hit.doc_id, 0.0) + 1.0 / (k + rank)
            ranks.setdefault(hit.doc_id, {})[name] = rank
            shown.setdefault(hit.doc_id, hit)
    order = sorted(scores, key=lambda d: (-scores[d], min(ranks[d].values()), d))[:limit]
    return [(shown[d], scores[d], ranks[d]) for d in order]


def match_notes(rankings: dict[str, list[Hit]], terms: list[str]) -> list[str]:
    """What a user should know about weak results: no document holds any of the query's words (keyword
    ranking empty), or the nearest by meaning is below :data:`SIMILARITY_FLOOR`."""
    notes = []
    if "keyword" in rankings and not rankings["keyword"] and terms:
        notes.append(f"no document contains any of the words {', '.join(list(dict.fromkeys(terms))[:6])}")
    dense = rankings.get("dense")
    # an identifier (a CAS number, a formula) is far in meaning from every text, and found by its words
    if dense and dense[0].score < SIMILARITY_FLOOR and not rankings.get("keyword"):
        notes.append(
            f"nothing is close in meaning (best similarity {dense[0].score:.2f} < {SIMILARITY_FLOOR}): "
            "the results are the least far, probably not what you want"
        )
    return notes


class Searcher:
    """A store and an embedder held together for many queries (the CLI uses one, the service keeps one)."""

    def __init__(self, store: MilvusStore, embedder_factory: Callable[[], Any], dim: int) -> None:
        if not store.exists():
            raise SearchError(
                f"nothing ingested yet: no collection {store.collection} at {store.uri} "
                "(run `cbnano ingest arxiv` first)"
            )
        store.ensure_collection(dim)
        self.store = store
        self._embedder_factory = embedder_factory
        self._embedder: Any = None
        self._lock = threading.Lock()
        # hybrid runs the BM25 search on this thread while the query is embedded and searched densely
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="keyword-search")

    @classmethod
    def from_settings(cls, settings: Settings) -> Searcher:
        """A searcher on the configured Milvus and embedding model (the model loads on the first query)."""
        from pipelines.embedding.minilm import DIMENSION, get_embedder

        if settings.milvus_is_lite and not Path(settings.milvus_uri).exists():  # searching creates nothing
            raise SearchError(
                f"nothing ingested yet: no Milvus Lite file at {settings.milvus_uri} "
                "(run `cbnano ingest arxiv` first)"
            )

        def factory() -> Any:
            return get_embedder(
                settings.embedding_model, settings.embedding_device, settings.embedding_batch_size
            )

        store = MilvusStore.from_settings(settings)
        try:
            dim = DIMENSION.get(settings.embedding_model) or factory().dimension
            return cls(store, factory, dim)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        """Release the Milvus connection."""
        self._pool.shutdown(wait=True)
        self.store.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def embed(self, text: str) -> list[float]:
        """The query's embedding (the model is loaded once, and used by one thread at a time)."""
        with self._lock:
            if self._embedder is None:
                self._embedder = self._embedder_factory()
            return [float(x) for x in self._embedder.encode([text])[0]]

    def search(self, query: Query) -> Answer:
        """Run ``query``: one result per document, best first."""
        flt = self.store.filter_for(query.source, query.category, query.since, query.until)
        terms = keyword_terms(query.text)
        mode = query.mode
        if mode != "dense" and not self.store.full_text:
            if mode == "keyword":
                raise SearchError(
                    f"keyword search needs Milvus's BM25 full-text search, which the collection "
                    f"{self.store.collection} at {self.store.uri} does not have"
                )
            log.warning(
                "collection %s has no full-text index: hybrid search falls back to dense",
                self.store.collection,
            )
            mode = "dense"
        depth = max(FUSION_DEPTH, 4 * query.top_k) if mode == "hybrid" else query.top_k
        rankings: dict[str, list[Hit]] = {}
        keyword = (
            self._pool.submit(self.store.search_keywords, " ".join(terms), limit=depth, filter=flt)
            if mode in ("hybrid", "keyword")
            else None
        )
        if mode in ("hybrid", "dense"):
            rankings["dense"] = self.store.search_dense(self.embed(query.text), limit=depth, filter=flt)
        if keyword is not None:
            rankings["keyword"] = keyword.result()
        if mode == "hybrid":
            fused = fuse(rankings, query.top_k)
        else:
            fused = [(h, h.score, {mode: rank}) for rank, h in enumerate(rankings[mode], 1)]
        results = [
            Result(**{**asdict(h), "score": score}, snippet=snippet(h.text, terms), ranks=ranks)
            for h, score, ranks in fused[: query.top_k]
        ]
        return Answer(results=results, mode=mode, notes=match_notes(rankings, terms))
