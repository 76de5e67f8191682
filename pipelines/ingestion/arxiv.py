"""arXiv ingestion in three retryable stages, shared by the ``cbnano`` CLI and the ``literature_ingestion`` DAG.

1. :func:`fetch_window` — query the export API for papers submitted in [start, end) and write every raw page
   to the data lake as it arrives. Returns a small manifest (paths and counts).
2. :func:`stage_pages` — parse the raw pages, quarantine unreadable entries with their reason, keep the
   newest version of each paper, normalise the text, and write ``records.jsonl``. Returns a manifest.
3. :func:`index_staged` — change detection, embedding and upsert into Milvus (see ``indexing``).

:func:`ingest_arxiv` runs the three in a row; its result is the CLI's JSON summary.
Each stage rewrites its own files on a retry, and the store is written by upsert, so re-running a window is
safe and, when nothing changed, costs no embedding.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.contracts import ArxivFetchManifest, IngestSummary, PaperRecord, StageManifest
from pipelines.documents import Document, normalize_text
from pipelines.ingestion.indexing import Progress, index_staged, summarize
from pipelines.lake import partition_dir, run_lock, write_atomic, write_json, write_jsonl
from pipelines.settings import MAX_ABSTRACT_CHARS, Settings
from pipelines.sources.arxiv import (
    DEFAULT_CATEGORIES,
    ArxivClient,
    Paper,
    build_window_query,
    parse_api_feed,
    parse_rss,
)
from pipelines.windows import check_window

log = logging.getLogger(__name__)

SOURCE = "arxiv"


def _run_dir(
    settings: Settings, kind: str, categories: Sequence[str], start: datetime, end: datetime
) -> Path:
    cats = hashlib.sha256(" ".join(sorted(categories)).encode()).hexdigest()[:8]
    key = f"{kind}-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}-{cats}"
    return partition_dir(settings.data_dir, SOURCE, start.strftime("%Y-%m-%d"), key)


def _clear_raw(raw_dir: Path) -> None:
    # A retry refetches the whole window; pages of an earlier, longer attempt must not linger.
    if raw_dir.is_dir():
        for old in raw_dir.glob("page-*"):
            old.unlink()


def fetch_window(
    settings: Settings,
    start: datetime,
    end: datetime,
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    max_results: int | None = None,
    client: ArxivClient | None = None,
    progress: Progress | None = None,
) -> ArxivFetchManifest:
    """Fetch the window's raw API pages into the lake; returns the fetch manifest."""
    check_window(start, end)
    categories = list(categories)
    query = build_window_query(categories, start, end)
    client = client or ArxivClient.from_settings(settings)
    run_dir = _run_dir(settings, "api", categories, start, end)
    raw_dir = run_dir / "raw"
    with run_lock(run_dir):  # another run of this window must not clear the pages while we write them
        _clear_raw(raw_dir)
        pages, entries, total = [], 0, 0
        for page in client.iter_window_pages(categories, start, end, max_results=max_results):
            name = (
                f"page-{page.start:06d}.xml"
                if not page.part
                else f"page-p{page.part:03d}-{page.start:06d}.xml"
            )
            write_atomic(raw_dir / name, page.body)
            pages.append(name)
            entries += page.entry_count
            total = page.total_results
            if progress:
                progress("fetch", entries, min(total, max_results or total))
        manifest: ArxivFetchManifest = {
            "source": SOURCE,
            "kind": "api",
            "query": query,
            "categories": categories,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "dir": str(run_dir),
            "pages": pages,
            "entries": entries,
            "total_results": total,
            "requests": client.http.requests_sent,
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "max_abstract_chars": settings.max_abstract_chars,
        }
        write_json(run_dir / "fetch.json", manifest)
    log.info("fetched %d entries in %d pages for %s", entries, len(pages), query)
    return manifest


def fetch_announcements(
    settings: Settings,
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    *,
    day: date,
    client: ArxivClient | None = None,
) -> ArxivFetchManifest:
    """Fetch the RSS announcements for each category into the lake, filed under ``day`` (the day the caller
    reads them: RSS serves only the current announcements); returns the fetch manifest."""
    client = client or ArxivClient.from_settings(settings)
    today = datetime(day.year, day.month, day.day, tzinfo=UTC)
    run_dir = _run_dir(settings, "rss", categories, today, today + timedelta(days=1))
    raw_dir = run_dir / "raw"
    _clear_raw(raw_dir)
    pages, entries = [], 0
    for cat in categories:
        body = client.fetch_rss(cat)
        name = f"page-{cat}.rss"
        write_atomic(raw_dir / name, body)
        pages.append(name)
        entries += len(parse_rss(body))
    manifest: ArxivFetchManifest = {
        "source": SOURCE,
        "kind": "rss",
        "categories": list(categories),
        "dir": str(run_dir),
        "pages": pages,
        "entries": entries,
        "requests": client.http.requests_sent,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "max_abstract_chars": settings.max_abstract_chars,
    }
    write_json(run_dir / "fetch.json", manifest)
    return manifest


def paper_record(paper: Paper, max_abstract_chars: int = MAX_ABSTRACT_CHARS) -> PaperRecord:
    """The staged record of a paper: every raw field plus the normalised title and embedding text.

    An abstract longer than ``max_abstract_chars`` is cut at a word there (``abstract_truncated`` holds its
    full length): a malformed multi-megabyte entry would otherwise become thousands of chunks.
    """
    title = normalize_text(paper.title)
    abstract = normalize_text(paper.abstract)
    full = len(abstract)
    if full > max_abstract_chars:
        abstract = abstract[:max_abstract_chars].rsplit(" ", 1)[0]
    rec: PaperRecord = {
        **paper.to_dict(),
        "source": "arxiv",
        "doc_id": paper.arxiv_id,
        "title_clean": title,
        "text": f"{title}. {abstract}",
    }
    if full > max_abstract_chars:
        rec["abstract_truncated"] = full
    return rec


def record_document(rec: PaperRecord) -> Document:
    """The vector-store document of a staged arXiv record."""
    return Document(
        source=SOURCE,
        doc_id=rec["doc_id"],
        title=rec["title_clean"],
        text=rec["text"],
        url=rec["url"],
        published=rec.get("published") or "",
        categories=tuple(rec["categories"]),
        version=int(rec["version"]),
    )


def stage_pages(fetch_manifest: ArxivFetchManifest) -> StageManifest:
    """Parse the fetched pages into ``records.jsonl`` and ``quarantine.jsonl``; returns the stage manifest."""
    run_dir = Path(fetch_manifest["dir"])
    with run_lock(run_dir):  # the pages stay as fetched while they are read
        return _stage_pages(fetch_manifest, run_dir)


def _stage_pages(fetch_manifest: ArxivFetchManifest, run_dir: Path) -> StageManifest:
    best: dict[str, Paper] = {}
    quarantine: list[dict[str, Any]] = []
    for name in fetch_manifest["pages"]:
        body = (run_dir / "raw" / name).read_bytes()
        if fetch_manifest["kind"] == "rss":
            papers, rejects = parse_rss(body), []
        else:
            feed = parse_api_feed(body, fetch_manifest.get("query", ""))
            papers, rejects = feed.papers, feed.rejects
        for rej in rejects:
            quarantine.append({**rej, "page": name})
        for p in papers:
            if p.arxiv_id not in best or p.version >= best[p.arxiv_id].version:
                best[p.arxiv_id] = p
    records = [
        paper_record(p, int(fetch_manifest.get("max_abstract_chars") or MAX_ABSTRACT_CHARS))
        for p in best.values()
    ]
    truncated = sum(1 for r in records if "abstract_truncated" in r)
    if truncated:
        log.warning(
            "%d abstract(s) longer than %s characters were cut",
            truncated,
            fetch_manifest.get("max_abstract_chars") or MAX_ABSTRACT_CHARS,
        )
    rows, digest = write_jsonl(run_dir / "records.jsonl", records)
    write_jsonl(run_dir / "quarantine.jsonl", quarantine)
    for q in quarantine:
        log.warning("quarantined entry %s on %s: %s", q.get("entry_id") or "?", q["page"], q["reason"])
    manifest: StageManifest = {
        "source": SOURCE,
        "uri": str(run_dir / "records.jsonl"),
        "rows": rows,
        "sha256": digest,
        "fetched": fetch_manifest["entries"],
        "quarantined": len(quarantine),
        "quarantine_uri": str(run_dir / "quarantine.jsonl"),
        "truncated_abstracts": truncated,
    }
    write_json(run_dir / "stage.json", manifest)
    return manifest


def ingest_arxiv(
    settings: Settings,
    start: datetime | None,
    end: datetime | None,
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    max_results: int | None = None,
    dry_run: bool = False,
    announced_on: date | None = None,
    progress: Progress | None = None,
) -> IngestSummary:
    """Fetch, stage and (unless ``dry_run``) index the window [start, end) (or, with ``announced_on``, the
    RSS announcements read that day, filed under it, and start/end are not used); returns the summary."""
    if announced_on is not None:
        fetched = fetch_announcements(settings, categories, day=announced_on)
    elif start is None or end is None:
        raise ValueError("a window needs both start and end (or announced_on, a day of RSS announcements)")
    else:
        fetched = fetch_window(settings, start, end, categories, max_results=max_results, progress=progress)
    staged = stage_pages(fetched)
    if dry_run:
        return {**summarize(staged, None), "dry_run": True, "records": staged["uri"]}
    return {**index_staged(settings, staged, record_document, progress=progress), "records": staged["uri"]}
