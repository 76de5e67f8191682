"""Search request validation, document-level rank fusion, snippets and the golden-set metrics."""

import math

import pytest

from pipelines.retrieval.golden import (
    golden_path,
    load_corpus,
    load_queries,
    ndcg_at,
    recall_at,
    reciprocal_rank,
)
from pipelines.retrieval.search import SearchError, fuse, parse_query, snippet
from pipelines.vectorstore.milvus import Hit, MilvusStore, published_day

pytestmark = pytest.mark.unit


def hit(doc_id, score=1.0, text="", chunk=0):
    return Hit(
        doc_id=doc_id,
        chunk_id=f"arxiv:{doc_id}#{chunk}",
        title=doc_id,
        source="arxiv",
        score=score,
        url="",
        text=text,
    )


def test_parse_query_defaults_and_dates():
    q = parse_query("  Li6PS5Cl ", since="2024-01-01", until="2024-12-31")
    assert (q.text, q.top_k, q.mode, q.since, q.until) == ("Li6PS5Cl", 5, "hybrid", 20240101, 20241231)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text": "   "}, "empty"),
        ({"text": "x" * 1001}, "at most 1000"),
        ({"text": "q", "top_k": 0}, "top-k"),
        ({"text": "q", "top_k": 101}, "top-k"),
        ({"text": "q", "mode": "fuzzy"}, "mode must be one of hybrid, dense, keyword"),
        ({"text": "q", "source": "scopus"}, "source"),
        ({"text": "q", "since": "2024-13-01"}, "since must be a date"),
        ({"text": "q", "until": "yesterday"}, "until must be a date"),
        ({"text": "q", "since": "2025-01-01", "until": "2024-01-01"}, "after until"),
        ({"text": "q", "category": 'x" or 1'}, "category"),
        ({"text": b"Li\xff".decode("utf-8", "surrogateescape")}, "not valid UTF-8"),
    ],
)
def test_parse_query_refuses_bad_input_naming_it(kwargs, message):
    with pytest.raises(SearchError, match=message):
        parse_query(**kwargs)


def test_fusion_is_per_document_and_rewards_agreement():
    dense = [hit("a"), hit("b"), hit("c")]
    keyword = [hit("c"), hit("d")]
    fused = fuse({"dense": dense, "keyword": keyword}, limit=10)
    order = [h.doc_id for h, _, _ in fused]
    assert order[0] == "c"  # 1/63 + 1/61 beats a lone first place (1/61)
    assert sorted(order) == ["a", "b", "c", "d"]  # each document once
    c_score, c_ranks = fused[0][1], fused[0][2]
    assert c_ranks == {"dense": 3, "keyword": 1}
    assert math.isclose(c_score, 1 / 63 + 1 / 61)
    assert len(fuse({"dense": dense, "keyword": keyword}, limit=2)) == 2


def test_snippet_centres_on_the_first_query_term():
    text = ("filler words " * 40) + "the argyrodite Li6PS5Cl conducts well " + ("more words " * 40)
    out = snippet(text, ["li6ps5cl"], width=80)
    assert "Li6PS5Cl" in out and out.startswith("…") and out.endswith("…") and len(out) <= 82
    assert snippet("short text", ["absent"]) == "short text"


def test_filter_expression_and_published_day():
    assert published_day("2024-05-01T12:00:00Z") == 20240501 and published_day("") == 0
    assert published_day("May 2024") == 0
    flt = MilvusStore.filter_for(source="arxiv", category="cond-mat.mtrl-sci", since=20240101, until=20241231)
    assert flt == (
        'source == "arxiv" and (categories == "cond-mat.mtrl-sci" or categories like "cond-mat.mtrl-sci %" '
        'or categories like "% cond-mat.mtrl-sci" or categories like "% cond-mat.mtrl-sci %") '
        "and published_day >= 20240101 and published_day <= 20241231 and published_day > 0"
    )
    assert MilvusStore.filter_for() == ""


def test_rank_metrics_by_hand():
    ranked = ["x", "a", "y", "b"]
    assert recall_at(ranked, ["a", "b", "c"], 2) == pytest.approx(1 / 3)
    assert reciprocal_rank(ranked, ["b"]) == 0.25 and reciprocal_rank(ranked, ["z"]) == 0.0
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at(ranked, ["a", "b"]) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)


def test_golden_set_is_consistent():
    docs = {d.doc_id for d in load_corpus(golden_path("corpus.jsonl"))}
    queries = load_queries(golden_path("queries.jsonl"))
    assert {q.kind for q in queries} == {"identifier", "paraphrase", "cross_source"}
    for q in queries:
        assert set(q.relevant) <= docs, q.id
    # an identifier query names something in its relevant document's text, a paraphrase does not
    texts = {d.doc_id: d.text + " " + d.doc_id for d in load_corpus(golden_path("corpus.jsonl"))}
    for q in queries:
        if q.kind == "identifier":
            assert q.query in texts[q.relevant[0]], q.id
