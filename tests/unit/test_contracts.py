"""The stage contracts (pipelines.contracts) say what DESIGN.md promises, and the projection keeps only that."""

import pytest

from pipelines.contracts import (
    INGEST_COUNTS,
    INGEST_SUMMARY_KEYS,
    RETRAIN_RESULT_KEYS,
    IngestSummary,
    RetrainResult,
    RetrainSummary,
    StageManifest,
    retrain_result,
)
from pipelines.ingestion.indexing import IndexSummary, summarize

pytestmark = pytest.mark.unit


def test_the_promised_keys_are_the_required_ones():
    assert set(INGEST_SUMMARY_KEYS) < set(INGEST_COUNTS)
    assert IngestSummary.__required_keys__ == frozenset(INGEST_SUMMARY_KEYS)
    assert RetrainResult.__required_keys__ == frozenset(RETRAIN_RESULT_KEYS)
    assert RetrainSummary.__required_keys__ == frozenset(RETRAIN_RESULT_KEYS)


def test_retrain_result_keeps_the_five_keys_only():
    summary: RetrainSummary = {
        "domain": "thermal",
        "version": "2026-10.abc",
        "published": True,
        "reason": "publish: gain 0.1",
        "metrics": {"candidate": {"heldout_loss": 1.0}},
        "run_dir": "/runs/x",
        "timings": {"train": 1.0},
        "system_a": "confirmed",
    }
    out = retrain_result(summary)
    assert list(out) == list(RETRAIN_RESULT_KEYS) and out["version"] == "2026-10.abc" and out["published"]


def test_summarize_fills_every_promised_key_and_the_source_extras():
    stage: StageManifest = {
        "source": "pubchem",
        "uri": "/lake/records.jsonl",
        "rows": 3,
        "sha256": "0" * 64,
        "fetched": 4,
        "quarantined": 1,
        "quarantine_uri": "/lake/quarantine.jsonl",
        "not_found": 2,
    }
    dry = summarize(stage, None)
    assert set(INGEST_SUMMARY_KEYS) <= set(dry) and dry["new"] == 0 and dry["not_found"] == 2
    done = summarize(stage, IndexSummary(new=3, chunks_upserted=5, capped_documents=1))
    assert (done["new"], done["chunks_upserted"], done["capped_documents"], done["quarantined"]) == (
        3,
        5,
        1,
        1,
    )


def test_the_retraining_report_lists_each_domain_and_the_ones_not_trained():
    from pipelines.contracts import not_trained, retrain_report

    results = [
        {
            "domain": "catalysis",
            "version": "2026-11.ab",
            "published": True,
            "reason": "published: ...",
            "metrics": {},
        },
        {
            "domain": "thermal",
            "version": "2026-11.cd",
            "published": False,
            "reason": "refused: ...",
            "metrics": {},
        },
        not_trained("materials", "3 usable examples"),
        None,  # a mapped task that did not return
    ]
    lines, untrained = retrain_report(results)
    assert lines == [
        "catalysis: 2026-11.ab -> production; published: ...",
        "thermal: 2026-11.cd kept; refused: ...",
        "materials: not trained: 3 usable examples",
    ]
    assert untrained == ["materials: not trained: 3 usable examples"]
