"""The shapes that cross stage boundaries: manifests the ingestion stages hand each other (through XCom in the
DAGs), the run summaries the CLI prints, the dataset card and the retraining summary.

They are ``TypedDict``s, not classes: each is written to the data lake as JSON and passed through XCom as it
is, so it stays a plain dict at run time while mypy checks every producer and reader. Keys marked
``NotRequired`` appear only for some sources or outcomes.
"""

# no `from __future__ import annotations` here: TypedDict reads NotRequired from evaluated annotations
from typing import Literal, NotRequired, TypedDict

# ---- ingestion -----------------------------------------------------------------------------------------


class ArxivFetchManifest(TypedDict):
    """``fetch.json`` of an arXiv run: the raw pages written to ``<dir>/raw/``."""

    source: str
    kind: str  # "api" (a window of submissions) or "rss" (today's announcements)
    categories: list[str]
    dir: str
    pages: list[str]
    entries: int
    requests: int
    fetched_at: str
    max_abstract_chars: int
    query: NotRequired[str]
    start: NotRequired[str]
    end: NotRequired[str]
    total_results: NotRequired[int]


class PubChemFetchManifest(TypedDict):
    """``fetch.json`` of a PubChem run: one properties and one descriptions answer per page of CIDs."""

    source: str
    dir: str
    pages: list[str]
    requested: list[int]
    resolved: dict[str, int]  # name → the CID PubChem listed first
    not_found: list[str]
    requests: int
    throttle_events: list[str]  # what PubChem said each time it throttled us
    fetched_at: str
    # name → (reason, raw answer) where PubChem's answer had another shape: quarantined, never cached
    unreadable_names: NotRequired[dict[str, list[str]]]


class ChunkRow(TypedDict):
    """One chunk as the ingestion side hands it to the vector store, complete: the store adds nothing."""

    chunk_id: str  # <source>:<doc_id>#<n>
    doc_id: str
    source: str
    title: str
    text: str
    url: str
    published: str  # ISO date or timestamp, or ""
    published_day: int  # YYYYMMDD of ``published``, 0 without a date (date filters)
    categories: str  # space-joined
    content_hash: str  # the document's, with the embedding model and chunking
    embedding_model: str
    version: int
    chunk_index: int
    chunk_count: int
    keywords: str  # the chunk's terms for BM25 (pipelines.terms), space-joined
    vector: list[float]


class PaperFields(TypedDict):
    """Every field of an arXiv paper as the API or RSS describes it (``sources.arxiv.Paper``)."""

    arxiv_id: str
    version: int
    title: str
    abstract: str
    authors: list[str]
    primary_category: str
    categories: list[str]
    published: str | None
    updated: str | None
    doi: str | None
    journal_ref: str | None
    comment: str | None
    announce_type: str | None
    url: str


class PaperRecord(PaperFields):
    """A staged arXiv record (a line of ``records.jsonl``): the raw fields plus the normalised text."""

    source: Literal["arxiv"]
    doc_id: str  # the versionless arXiv id
    title_clean: str
    text: str  # "<title>. <abstract>", what is embedded
    abstract_truncated: NotRequired[int]  # the full length of an abstract that was cut


class CompoundFields(TypedDict):
    """What the platform keeps of one PubChem compound (``sources.pubchem.Compound``), as JSON."""

    cid: int
    title: str
    formula: str
    weight: float | None
    iupac_name: str
    smiles: str
    connectivity_smiles: str
    inchikey: str
    xlogp: float | None
    descriptions: list[list[str]]  # [text, source name, source URL]
    synonyms: list[str]


class CompoundRecord(CompoundFields):
    """A staged PubChem record (a line of ``records.jsonl``)."""

    source: Literal["pubchem"]
    doc_id: str  # the CID as text
    text: str  # what is embedded


LakeRecord = PaperRecord | CompoundRecord


class SourceCounts(TypedDict):
    documents: int
    chunks: int


class StoreStats(TypedDict):
    """What ``cbnano stats`` prints: per source its documents and chunks, and the embedding models found."""

    sources: dict[str, SourceCounts]
    embedding_models: list[str]


class StageManifest(TypedDict):
    """``stage.json``: the normalised ``records.jsonl`` a run produced and what it set aside."""

    source: str
    uri: str
    rows: int
    sha256: str
    fetched: int
    quarantined: int
    quarantine_uri: str
    truncated_abstracts: NotRequired[int]  # arXiv
    not_found: NotRequired[int]  # PubChem: names it does not know
    not_found_names: NotRequired[list[str]]


# the keys DESIGN.md promises every `cbnano ingest` summary, in the order it lists them
INGEST_SUMMARY_KEYS = (
    "fetched",
    "new",
    "updated",
    "unchanged",
    "chunks_upserted",
    "chunks_deleted",
    "quarantined",
)

# the counts the ingestion report page and the metrics show, in display order (PubChem adds not_found)
INGEST_COUNTS = (
    "fetched",
    "new",
    "updated",
    "unchanged",
    "quarantined",
    "chunks_upserted",
    "chunks_deleted",
    "not_found",
)


class IngestSummary(TypedDict):
    """What ``cbnano ingest`` prints and a DAG's indexing task returns (``summary.json`` adds timing)."""

    fetched: int
    new: int
    updated: int
    unchanged: int
    chunks_upserted: int
    chunks_deleted: int
    quarantined: int
    not_found: NotRequired[int]
    not_found_names: NotRequired[list[str]]
    capped_documents: NotRequired[int]
    refused_documents: NotRequired[int]  # a field the store cannot hold: logged, not indexed
    truncated_abstracts: NotRequired[int]
    dry_run: NotRequired[bool]
    records: NotRequired[str]


# ---- training ------------------------------------------------------------------------------------------


class DatasetFiles(TypedDict):
    train: str  # chat rows
    train_text: str  # completion rows (the documents' text)
    validation: str
    probe: str  # the knowledge probe


class TeacherCounts(TypedDict):
    used: bool  # a teacher model wrote the fact QA (else the rule-based extractor)
    kept: int  # its items that survived the checks against the source
    dropped: int


class ProbeCard(TypedDict):
    items: int
    closed: int
    open: int
    documents: int
    baselines: dict[str, float]  # chance, longest_choice, shortest_choice


class DatasetCard(TypedDict):
    """``dataset_card.json`` of one domain's monthly dataset."""

    domain: str
    month: str | None
    months: list[str]  # the months whose staged documents it holds (thin months carried forward)
    carried_from: str | None  # the last month built before it; its documents come back only as replay
    format: str
    examples: int
    train: int
    validation: int
    validation_documents: int
    by_source: dict[str, int]
    by_kind: dict[str, int]  # training rows by kind (datasets.KINDS); they add up to ``train``
    teacher: TeacherCounts
    probe: ProbeCard
    dropped: dict[str, int]
    bad_internal_lines: list[str]
    tokens: dict[str, float]
    sha256: str
    files: DatasetFiles
    built_at: str


class Evaluation(TypedDict):
    """What :func:`pipelines.evaluation.evaluate.evaluate_roles` returns: each role's means and the per-item
    scores the gate pairs (metric → role → item id → score), with where and how it ran."""

    metrics: dict[str, dict[str, float]]  # role → metric → mean
    per_item: dict[str, dict[str, dict[str, float]]]
    device: str | None
    dtype: str | None
    seconds: float | None
    peak_gpu_gib: float | None
    items: str | None  # the multiple-choice set
    heldout: str | None  # the held-out rows
    probe: NotRequired[int | None]  # knowledge-probe items scored


# ---- evaluation ----------------------------------------------------------------------------------------


class ChoiceItem(TypedDict):
    """A multiple-choice item (the forgetting guard's questions): ``answer`` indexes ``choices``."""

    id: str
    question: str
    choices: list[str]
    answer: int
    domain: NotRequired[str]
    source: NotRequired[str]


class ProbeItem(ChoiceItem):
    """A knowledge-probe item on one of the month's documents (``probe.jsonl``)."""

    doc: str
    kind: str  # "closed" (the question alone) or "open" (with the passages `cbnano ask` retrieves)
    passages: list[str]
    held_out: bool
    # closed items: the same question about another trained document (the primary's baseline, see
    # pipelines.evaluation.scoring); absent where the month trained no other document of the source
    contrast: NotRequired[str]


class ChatRow(TypedDict):
    """A held-out chat row the evaluation scores: the NLL of its assistant turns, grouped by document."""

    id: str
    messages: list[dict[str, str]]
    doc: NotRequired[str]


class PassageRow(TypedDict):
    """A general-text passage (``general_loss``): the NLL of its text after the first word."""

    id: str
    text: str


class EvalGroup(TypedDict):
    """One base model of an evaluation spec and the roles scored on it (role → adapter folder, or None for
    the bare base)."""

    base: str
    roles: dict[str, str | None]


class Scores(TypedDict):
    """One model's scores: metric → mean, and metric → item id → score."""

    metrics: dict[str, float]
    per_item: dict[str, dict[str, float]]


class RatedAnswer(TypedDict):
    """A rated ``+rag`` answer (the next month's feedback rows, the registry page's flagged answers)."""

    id: str
    model: str
    question: str | None
    answer: str | None
    sources: list[str]
    comment: str | None
    at: str


RETRAIN_RESULT_KEYS = ("domain", "version", "published", "reason", "metrics")


class RetrainResult(TypedDict):
    """The five keys every caller of a retraining run reports (CLI line, DAG XCom): see DESIGN.md."""

    domain: str
    version: str | None  # None: the run stopped before a candidate was trained
    published: bool  # production moved to ``version``
    reason: str
    metrics: dict[str, dict[str, float]]  # role → metric → mean (a reused candidate: {"candidate": ...})


class RetrainSummary(RetrainResult):
    """:func:`pipelines.training.retrain.retrain`'s whole answer."""

    run_dir: NotRequired[str]
    timings: NotRequired[dict[str, float]]
    train_stats: NotRequired[dict[str, float]]
    evaluation: NotRequired[dict[str, object]]  # where and how it ran (Evaluation less the scores)
    system_a: NotRequired[str]  # the hand-off's state when production moved


def retrain_result(summary: RetrainSummary) -> RetrainResult:
    """The five reported keys of a retraining summary (what the CLI prints and the DAG passes on)."""
    return RetrainResult(
        domain=summary["domain"],
        version=summary["version"],
        published=summary["published"],
        reason=summary["reason"],
        metrics=summary["metrics"],
    )


def not_trained(domain: str, why: str) -> RetrainResult:
    """The result of a domain whose month could not be trained (too little data): no version, the reason."""
    return RetrainResult(
        domain=domain, version=None, published=False, reason=f"not trained: {why}", metrics={}
    )


def retrain_report(results: list[RetrainResult | None]) -> tuple[list[str], list[str]]:
    """(one line per domain's result, the domains that could not be trained) for the retraining DAG's report
    and the CLI: a version moved to production or kept, with the gate's reason."""
    lines, untrained = [], []
    for r in (r for r in results if r):
        if r["version"]:
            where = "-> production" if r["published"] else "kept"
            lines.append(f"{r['domain']}: {r['version']} {where}; {r['reason']}")
        else:
            lines.append(f"{r['domain']}: {r['reason']}")
            untrained.append(lines[-1])
    return lines, untrained
