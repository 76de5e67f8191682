"""PubChem compound ingestion, shared by ``cbnano ingest pubchem`` and the ``compound_ingestion`` DAG.

Which compounds: CIDs given directly, names given directly, the lab's watch list
(``include/pubchem_watchlist.csv``) and compounds named in ingested papers (``sources.mentions``). Names are
resolved name → CID through a cache under ``CBNANO_HOME/pubchem/``: a name PubChem did not know is not asked
again for ``NEGATIVE_TTL_DAYS``; a resolved one is reused for ``POSITIVE_TTL_DAYS``.

Stages, like arXiv's:
1. :func:`fetch_compounds` — resolve names, then fetch properties and descriptions in batches; the raw
   JSON answers go to ``CBNANO_DATA_DIR/pubchem/<day>/<run>/raw/``.
2. :func:`stage_compounds` — raw answers → ``records.jsonl`` (one structured record per CID, for the dataset
   builder) with the readable text that gets embedded.
3. ``indexing.index_staged`` with :func:`record_document` — same change detection and Milvus rules as papers,
   ``source`` = ``pubchem``, document id = the CID.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypedDict

from pipelines.assets import watchlist_rows
from pipelines.contracts import CompoundRecord, IngestSummary, PubChemFetchManifest, StageManifest
from pipelines.documents import Document
from pipelines.ingestion.indexing import Progress, index_staged, summarize
from pipelines.lake import partition_dir, read_jsonl, staged_records, write_json, write_jsonl
from pipelines.settings import Settings
from pipelines.sources.mentions import find_mentions
from pipelines.sources.pubchem import (
    AnswerShapeError,
    Compound,
    DescriptionEntry,
    PubChemClient,
    cid_of,
    compound_from,
    parse_descriptions,
    parse_properties,
)
from pipelines.windows import window_day_span

log = logging.getLogger(__name__)

SOURCE = "pubchem"
NEGATIVE_TTL_DAYS = 30
POSITIVE_TTL_DAYS = 180


def load_watchlist(path: Path | None = None) -> list[str]:
    """Names in the watch list CSV (column ``name``), in file order; raises ValueError on a bad file."""
    return [row["name"] for row in watchlist_rows(path)]


class CachedName(TypedDict):
    cids: list[int]  # [] = PubChem knows no compound by that name
    at: str  # when PubChem answered (ISO time)


class NameCache:
    """name (lower-case) → CIDs with the time of the answer, kept as JSON under ``CBNANO_HOME/pubchem``."""

    def __init__(self, path: Path, now: datetime | None = None) -> None:
        self.path = path
        self.now = now or datetime.now(UTC)
        self.entries: dict[str, CachedName] = self._load(path)

    @staticmethod
    def _load(path: Path) -> dict[str, CachedName]:
        """The cached answers; a cache that cannot be read is set aside (``.corrupt``) and started afresh, and
        an entry of the wrong shape is dropped: the names are only asked again."""
        if not path.is_file():
            return {}
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError(f"a JSON {type(raw).__name__}, not an object")
        except (OSError, ValueError, RecursionError) as exc:
            aside = path.with_name(path.name + ".corrupt")
            log.warning("PubChem name cache %s is unreadable (%s): set aside as %s", path, exc, aside.name)
            path.replace(aside)
            return {}
        good: dict[str, CachedName] = {}
        for name, entry in raw.items():
            try:
                cids = [cid_of(c) for c in entry["cids"]]
                datetime.fromisoformat(entry["at"])
            except (KeyError, TypeError, ValueError):
                continue
            good[name] = {"cids": cids, "at": entry["at"]}
        return good

    def get(self, name: str) -> list[int] | None:
        """Cached CIDs ([] = known not found) or None when unknown or expired."""
        entry = self.entries.get(name.strip().lower())
        if entry is None:
            return None
        ttl = POSITIVE_TTL_DAYS if entry["cids"] else NEGATIVE_TTL_DAYS
        if self.now - datetime.fromisoformat(entry["at"]) > timedelta(days=ttl):
            return None
        return list(entry["cids"])

    def put(self, name: str, cids: Sequence[int]) -> None:
        """Remember PubChem's answer for ``name``."""
        self.entries[name.strip().lower()] = {
            "cids": list(cids),
            "at": self.now.isoformat(timespec="seconds"),
        }

    def save(self) -> None:
        """Write the cache atomically."""
        write_json(self.path, self.entries)


def paper_mentions(
    data_dir: Path,
    window: tuple[datetime, datetime] | None,
    known: Iterable[str] = (),
    records: Iterable[Path] = (),
) -> list[str]:
    """Candidate compound names/formulas in the given arXiv ``records``, else in those staged for days in
    ``window`` = [start, end)."""
    files = list(records)
    if not files and window is not None:
        span = window_day_span(*window)
        files = [f.path for f in staged_records(data_dir, ["arxiv"], *span)] if span else []
    known = list(known)
    found: list[str] = []
    for f in files:
        for rec in read_jsonl(f):
            found.extend(find_mentions(rec.get("text", ""), known))
    return list(dict.fromkeys(found))


def fetch_compounds(
    settings: Settings,
    cids: Iterable[int] = (),
    names: Iterable[str] = (),
    *,
    day: date,
    client: PubChemClient | None = None,
    progress: Progress | None = None,
) -> PubChemFetchManifest:
    """Resolve ``names``, fetch every compound's properties and descriptions into the lake, filed under the
    run's ``day`` (its data interval's, or the papers window's: a backfill files where its interval is, and a
    month's dataset finds them); returns a manifest."""
    client = client or PubChemClient.from_settings(settings)
    cache = NameCache(settings.home / "pubchem" / "name_cache.json")
    wanted = list(dict.fromkeys(int(c) for c in cids))
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    not_found: list[str] = []
    resolved: dict[str, int] = {}
    unreadable: dict[str, list[str]] = {}
    for i, name in enumerate(names, 1):
        hit = cache.get(name)
        if hit is None:
            try:
                hit = client.cids_for_name(name)
            except AnswerShapeError as exc:  # quarantined at staging; asked again next run
                unreadable[name] = [str(exc), exc.raw]
                if progress:
                    progress("resolve", i, len(names))
                continue
            cache.put(name, hit)
        if hit:
            resolved[name] = hit[0]  # PubChem lists the best match first
            wanted.append(hit[0])
        else:
            not_found.append(name)
        if progress:
            progress("resolve", i, len(names))
    cache.save()
    wanted = list(dict.fromkeys(wanted))
    key = hashlib.sha256(
        json.dumps([sorted(wanted), sorted(not_found), sorted(unreadable)]).encode()
    ).hexdigest()[:10]
    run_dir = partition_dir(settings.data_dir, SOURCE, day.isoformat(), f"run-{key}")
    raw = run_dir / "raw"
    pages: list[str] = []
    for i in range(0, len(wanted), client.batch_size):
        batch = wanted[i : i + client.batch_size]
        n = i // client.batch_size
        props = client.properties(batch)
        descs = client.descriptions([c for r in props if isinstance(c := r.get("CID"), int)])
        write_json(raw / f"properties-{n:04d}.json", {"PropertyTable": {"Properties": props}})
        write_json(
            raw / f"descriptions-{n:04d}.json",
            {
                "InformationList": {
                    "Information": [info for cid, d in descs.items() for info in _information(cid, d)]
                }
            },
        )
        pages.append(f"{n:04d}")
        if progress:
            progress("fetch", min(i + len(batch), len(wanted)), len(wanted))
    manifest: PubChemFetchManifest = {
        "source": SOURCE,
        "dir": str(run_dir),
        "pages": pages,
        "requested": wanted,
        "resolved": resolved,
        "not_found": not_found,
        "unreadable_names": unreadable,
        "requests": client.http.requests_sent,
        "throttle_events": client.throttle_events,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(run_dir / "fetch.json", manifest)
    log.info(
        "pubchem: %d compounds requested, %d names not found, %d requests",
        len(wanted),
        len(not_found),
        client.http.requests_sent,
    )
    return manifest


def _information(cid: int, desc: DescriptionEntry) -> list[dict[str, object]]:
    # Back to PubChem's own InformationList shape, so the lake keeps the answer's format.
    out: list[dict[str, object]] = [{"CID": cid, "Title": desc["title"]}]
    out += [
        {"CID": cid, "Description": t, "DescriptionSourceName": s, "DescriptionURL": u}
        for t, s, u in desc["descriptions"]
    ]
    return out


def compound_text(c: Compound) -> str:
    """The readable text embedded for a compound: names, identifiers and descriptions with their sources."""
    parts = [f"{c.title or c.iupac_name or 'Compound'} (PubChem CID {c.cid})."]
    if c.iupac_name:
        parts.append(f"IUPAC name: {c.iupac_name}.")
    if c.formula:
        parts.append(f"Molecular formula: {c.formula}.")
    if c.weight is not None:
        parts.append(f"Molecular weight: {c.weight:g} g/mol.")
    if c.smiles:
        parts.append(f"SMILES: {c.smiles}.")
    if c.inchikey:
        parts.append(f"InChIKey: {c.inchikey}.")
    for text, source, _url in c.descriptions:
        parts.append(f"{text} (Source: {source})" if source else text)
    return " ".join(parts)


def stage_compounds(fetch_manifest: PubChemFetchManifest) -> StageManifest:
    """Raw answers → ``records.jsonl`` (structured record + ``text``); returns the stage manifest."""
    run_dir = Path(fetch_manifest["dir"])
    records, quarantine = [], []
    requested = set(fetch_manifest["requested"])
    seen: set[int] = set()
    for page in fetch_manifest["pages"]:
        rows = parse_properties(json.loads((run_dir / "raw" / f"properties-{page}.json").read_text()))
        descs = parse_descriptions(json.loads((run_dir / "raw" / f"descriptions-{page}.json").read_text()))
        for row in rows:
            try:
                cid = row.get("CID")
                comp = compound_from(row, descs.get(cid) if isinstance(cid, int) else None)
            except (KeyError, ValueError, TypeError) as exc:
                quarantine.append({"reason": f"unreadable property row: {exc}", "raw": json.dumps(row)})
                if isinstance(cid, int) and not isinstance(cid, bool):
                    seen.add(cid)  # quarantined under its own reason
                continue
            if comp.cid not in requested:
                quarantine.append(
                    {
                        "reason": f"PubChem answered CID {comp.cid}, which was not asked for",
                        "raw": json.dumps(row),
                    }
                )
                continue
            if comp.cid in seen:
                continue
            seen.add(comp.cid)
            synonyms = sorted(n for n, cid in fetch_manifest["resolved"].items() if cid == comp.cid)
            rec: CompoundRecord = {
                **comp.to_dict(),
                "synonyms": synonyms,
                "source": "pubchem",
                "doc_id": str(comp.cid),
                "text": compound_text(comp),
            }
            records.append(rec)
    quarantine += [  # a name whose answer had another shape: neither found nor "not found"
        {"reason": reason, "raw": raw, "name": name}
        for name, (reason, raw) in fetch_manifest.get("unreadable_names", {}).items()
    ]
    # a CID asked for that came back with no usable row is quarantined by name, never lost in silence
    quarantine += [
        {"reason": f"PubChem answered no usable property row for CID {cid}", "raw": json.dumps({"CID": cid})}
        for cid in fetch_manifest["requested"]
        if cid not in seen
    ]
    rows_n, digest = write_jsonl(run_dir / "records.jsonl", records)
    write_jsonl(run_dir / "quarantine.jsonl", quarantine)
    manifest: StageManifest = {
        "source": SOURCE,
        "uri": str(run_dir / "records.jsonl"),
        "rows": rows_n,
        "sha256": digest,
        "fetched": len(fetch_manifest["requested"]),
        "quarantined": len(quarantine),
        "not_found": len(fetch_manifest["not_found"]),
        "not_found_names": fetch_manifest["not_found"],
        "quarantine_uri": str(run_dir / "quarantine.jsonl"),
    }
    write_json(run_dir / "stage.json", manifest)
    return manifest


def record_document(rec: CompoundRecord) -> Document:
    """The vector-store document of a staged compound record."""
    title = rec.get("title") or rec.get("iupac_name") or f"CID {rec['cid']}"
    return Document(
        source=SOURCE,
        doc_id=str(rec["cid"]),
        title=title,
        text=rec["text"],
        url=f"https://pubchem.ncbi.nlm.nih.gov/compound/{rec['cid']}",
    )


def select_names(
    settings: Settings,
    names: Iterable[str] = (),
    watchlist: bool = False,
    from_papers: tuple[datetime, datetime] | None = None,
    paper_records: Iterable[Path] = (),
) -> list[str]:
    """Every name to resolve: the given ones, the watch list, and mentions in papers of a window/records."""
    out = list(names)
    known = load_watchlist() if (watchlist or from_papers or paper_records) else []
    if watchlist:
        out += known
    if from_papers or paper_records:
        out += paper_mentions(settings.data_dir, from_papers, known, paper_records)
    return list(dict.fromkeys(n for n in out if n.strip()))


def ingest_pubchem(
    settings: Settings,
    cids: Iterable[int] = (),
    names: Iterable[str] = (),
    watchlist: bool = False,
    from_papers: tuple[datetime, datetime] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    *,
    day: date,
) -> IngestSummary:
    """Select, fetch, stage and (unless ``dry_run``) index compounds, filed under the run's ``day`` (see
    :func:`fetch_compounds`); returns the summary (+ ``not_found``)."""
    all_names = select_names(settings, names, watchlist, from_papers)
    fetched = fetch_compounds(settings, cids, all_names, day=day, progress=progress)
    staged = stage_compounds(fetched)
    if dry_run:
        return {
            **summarize(staged, None),
            "dry_run": True,
            "not_found_names": staged["not_found_names"],
            "records": staged["uri"],
        }
    return {
        **index_staged(settings, staged, record_document, progress=progress),
        "not_found_names": staged["not_found_names"],
        "records": staged["uri"],
    }
