import json
from datetime import UTC, datetime

import pytest

from pipelines.training.datasets import (
    DatasetTooSmall,
    Example,
    build_dataset,
    compound_examples,
    held_out_documents,
    internal_examples,
    is_validation,
    paper_examples,
)

pytestmark = pytest.mark.unit


def words(text):
    return len(text.split())


@pytest.fixture
def lake(replay, fixtures_dir, monkeypatch, cbnano_env):
    """Papers and compounds staged from the fixtures (no embedding), as ingestion leaves them in the lake."""
    from pipelines.ingestion.arxiv import ingest_arxiv
    from pipelines.ingestion.pubchem import ingest_pubchem
    from pipelines.settings import get_settings, reset_settings_cache

    srv = replay(pubchem_dir=fixtures_dir / "pubchem")
    monkeypatch.setenv("CBNANO_PUBCHEM_URL", srv.pubchem_url)
    reset_settings_cache()
    settings = get_settings()
    ingest_arxiv(
        settings,
        datetime(2026, 11, 25, tzinfo=UTC),
        datetime(2026, 11, 27, tzinfo=UTC),
        ["cond-mat.mtrl-sci", "physics.chem-ph"],
        dry_run=True,
    )
    ingest_pubchem(settings, names=["water", "TiO2", "cerium oxide", "ethylene carbonate"], dry_run=True)
    return settings.data_dir


def test_paper_examples_title_summary_finding():
    rec = {
        "doc_id": "1",
        "title_clean": "Garnet Electrolytes",
        "text": "Garnet Electrolytes. Garnet LLZO is a solid electrolyte for batteries. "
        "We find a conductivity of 1.3 mS/cm at 25 C. Cells cycle for 800 h.",
    }
    ex = paper_examples(rec)
    assert [e.output for e in ex] == [
        "Garnet Electrolytes",
        "Garnet LLZO is a solid electrolyte for batteries.",
        "We find a conductivity of 1.3 mS/cm at 25 C.",
    ]
    assert ex[0].input.startswith("Garnet LLZO") and ex[0].source == "arxiv"


def test_compound_examples_several_phrasings():
    rec = {
        "cid": 7303,
        "title": "Ethylene Carbonate",
        "formula": "C3H4O3",
        "weight": 88.06,
        "iupac_name": "1,3-dioxolan-2-one",
        "smiles": "C1COC(=O)O1",
        "descriptions": [["A cyclic carbonate.", "src", "url"]],
    }
    ex = compound_examples(rec)
    formula = [e for e in ex if "C3H4O3" in e.output]
    assert len(formula) == 2 and len({e.instruction for e in formula}) == 2
    assert any(e.output == "Ethylene Carbonate has a molecular weight of 88.06 g/mol." for e in ex)
    assert len(ex) == 9


def test_internal_drops_report_bad_lines(tmp_path):
    d = tmp_path / "internal" / "thermal"
    d.mkdir(parents=True)
    (d / "notes.jsonl").write_text(
        '{"instruction": "Q1", "output": "A1"}\n'
        "not json\n"
        '{"instruction": "", "output": "A3"}\n'
        "\n"
        '{"instruction": "Q5", "input": 5, "output": "A5"}\n'
        '["a list"]\n'
        '{"instruction": "Q7", "input": "ctx", "output": "A7"}\n'
    )
    ex, problems = internal_examples(d)
    assert [(e.instruction, e.input, e.ref) for e in ex] == [
        ("Q1", "", "notes.jsonl:1"),
        ("Q7", "ctx", "notes.jsonl:7"),
    ]
    assert [p.split(":")[1] for p in problems] == ["2", "3", "5", "6"]
    assert "missing or empty instruction" in problems[1]


def test_split_is_by_document_and_deterministic():
    flags = [is_validation(Example("q", "", "a", "arxiv", f"arxiv:2611.{i:05d}"), 20) for i in range(2000)]
    assert 0.15 < sum(flags) / len(flags) < 0.25
    held = next(i for i, f in enumerate(flags) if f)
    # every phrasing of a held-out document is held out, whatever its text
    phrasings = [
        Example(q, "", f"answer {k}", "arxiv", f"arxiv:2611.{held:05d}")
        for k, q in enumerate(["Suggest a title.", "Summarize this abstract.", "What is the key finding?"])
    ]
    assert all(is_validation(e, 20) for e in phrasings)
    # a small corpus still holds out the minimum number of documents, the same ones every time
    refs = [f"pubchem:{i}" for i in range(12)]
    held = held_out_documents(refs, 10, 5)
    assert len(held) == 5 and held == held_out_documents(list(reversed(refs)), 10, 5)
    big = [f"arxiv:2611.{i:05d}" for i in range(2000)]
    assert held_out_documents(big, 20, 5) == {
        r for r in big if is_validation(Example("q", "", "a", "arxiv", r), 20)
    }


def test_lab_drops_can_group_lines_into_one_document(tmp_path):
    d = tmp_path / "internal" / "catalysis"
    d.mkdir(parents=True)
    (d / "facts.jsonl").write_text(
        json.dumps({"instruction": "What stores oxygen?", "output": "Ceria.", "doc": "ceria-osc"})
        + "\n"
        + json.dumps(
            {
                "instruction": "Which oxide has oxygen storage capacity?",
                "output": "Ceria.",
                "doc": "ceria-osc",
            }
        )
        + "\n"
        + json.dumps({"instruction": "Q", "output": "A"})
        + "\n"
    )
    ex, problems = internal_examples(d)
    assert not problems and [e.ref for e in ex] == ["internal:catalysis:ceria-osc"] * 2 + ["facts.jsonl:3"]


def test_build_catalysis_dataset(lake, tmp_path):
    out = tmp_path / "ds"
    internal = lake / "internal" / "catalysis"
    internal.mkdir(parents=True)
    (internal / "lab.jsonl").write_text(
        json.dumps({"instruction": "Which support stores oxygen?", "output": "Ceria."})
        + "\n"
        + json.dumps({"instruction": "Which support stores oxygen?", "output": "Ceria."})
        + "\n"  # duplicate
        + "{broken\n"
    )
    eval_texts = [
        "Isolated platinum atoms anchored at step edges of ceria are studied with density functional theory"
    ]
    card = build_dataset(
        "catalysis",
        lake,
        out,
        words,
        eval_texts=eval_texts,
        month="2026-11",
        min_examples=5,
        min_validation_docs=2,
        watchlist_domains={"titanium dioxide": "catalysis", "cerium oxide": "catalysis"},
    )
    assert card["by_source"]["pubchem"] > 0 and card["by_source"]["internal"] == 1
    assert card["dropped"]["duplicates"] >= 1 and card["dropped"]["bad_internal_lines"] == 1
    assert card["dropped"]["eval_overlap"] >= 1  # the Pt-on-ceria paper's abstract is in the eval text
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    rows += [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    assert len(rows) == card["examples"] == card["train"] + card["validation"]
    text = [" ".join(m["content"] for m in r["messages"]).lower() for r in rows]
    assert all("platinum atoms anchored at step edges" not in t for t in text)
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    assert set(train[0]) == {"messages"} and set(val[0]) == {"id", "doc", "source", "messages"}
    assert [m["role"] for m in train[0]["messages"]] == ["user", "assistant"]
    assert len({r["id"] for r in val}) == len(val) and card["validation_documents"] == len(
        {r["doc"] for r in val}
    )
    # held-out documents never appear in training: none of their answers is a training answer
    train_answers = {r["messages"][1]["content"] for r in train}
    assert val and not any(r["messages"][1]["content"] in train_answers for r in val)
    assert card["validation_documents"] == 2
    again = build_dataset(
        "catalysis",
        lake,
        tmp_path / "ds2",
        words,
        eval_texts=eval_texts,
        month="2026-11",
        min_examples=5,
        min_validation_docs=2,
        watchlist_domains={"titanium dioxide": "catalysis", "cerium oxide": "catalysis"},
    )
    assert again["sha256"] == card["sha256"]  # same inputs, same dataset


def test_too_few_examples_is_a_clear_refusal(lake, tmp_path):
    with pytest.raises(DatasetTooSmall, match="need at least 10000"):
        build_dataset("thermal", lake, tmp_path / "ds", words, min_examples=10000)
    assert not (tmp_path / "ds").exists()


def test_length_filter_uses_the_given_tokenizer(lake, tmp_path):
    card = build_dataset(
        "materials", lake, tmp_path / "ds", words, max_tokens=30, min_examples=1, min_validation_docs=1
    )
    assert card["dropped"]["too_long"] > 0 and card["tokens"]["max"] <= 30


def test_lab_drops_split_lines_as_jsonl_does_and_stay_in_their_folder(tmp_path):
    d = tmp_path / "internal" / "catalysis"
    d.mkdir(parents=True)
    rows = [
        {"instruction": "Q1\u2028with a line separator", "output": "A1 \u0085 with NEL"},
        {"instruction": "Q2", "output": "A2"},
    ]
    # a byte-order mark before line 1, and JSON text that holds U+2028 and NEL unescaped
    (d / "bom.jsonl").write_bytes(
        b"\xef\xbb\xbf" + "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
    )
    outside = tmp_path / "secret.jsonl"
    outside.write_text('{"instruction": "leaked", "output": "from elsewhere"}\n')
    (d / "link.jsonl").symlink_to(outside)
    (d / "inside.jsonl").write_text('{"instruction": "Q3", "output": "A3"}\n')
    (d / "again.jsonl").symlink_to(d / "inside.jsonl")  # a link within the folder is fine
    (d / "huge.jsonl").write_text(json.dumps({"instruction": "Q", "output": "x" * 300_000}) + "\n")
    ex, problems = internal_examples(d)
    assert sorted(e.instruction for e in ex) == ["Q1\u2028with a line separator", "Q2", "Q3", "Q3"]
    assert not any("leaked" in e.instruction for e in ex)
    assert any(p.startswith("link.jsonl: a link to") and "outside the drop folder" in p for p in problems)
    assert any(p.startswith("huge.jsonl:1: 300,") for p in problems)
    assert len(problems) == 2


def test_texts_far_beyond_the_window_are_never_tokenized(lake, tmp_path):
    seen = []

    def counting(text):
        seen.append(len(text))
        return len(text.split())

    drop = lake / "internal" / "materials"
    drop.mkdir(parents=True, exist_ok=True)
    (drop / "big.jsonl").write_text(json.dumps({"instruction": "Q", "output": "word " * 30_000}) + "\n")
    card = build_dataset(
        "materials", lake, tmp_path / "ds", counting, max_tokens=200, min_examples=1, min_validation_docs=1
    )
    assert card["dropped"]["too_long"] >= 1 and max(seen) <= 200 * 32
