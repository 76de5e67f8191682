import json
from collections import Counter
from datetime import UTC, datetime

import pytest
from fixture_lake import stage_fixtures

from pipelines.training.datasets import (
    KINDS,
    DatasetTooSmall,
    Example,
    build_dataset,
    compound_examples,
    held_out_documents,
    internal_examples,
    internal_probe_items,
    is_validation,
    paper_examples,
)
from pipelines.training.knowledge import (
    Fact,
    choices_for,
    compound_facts,
    conventional_formula,
    is_extended_solid,
    quantity_facts,
    unit_distractors,
    unsupported,
)

pytestmark = pytest.mark.unit


def words(text):
    return len(text.split())


@pytest.fixture
def lake(staged_lake):
    """Papers and compounds staged from the fixtures (no embedding), as ingestion leaves them in the lake."""
    return staged_lake.data_dir


GARNET = {
    "doc_id": "1",
    "title_clean": "Garnet Electrolytes",
    "text": "Garnet Electrolytes. Garnet LLZO is a solid electrolyte for all-solid-state batteries. "
    "We find an ionic conductivity of 1.3 mS/cm at 25 C using impedance spectroscopy. "
    "Cells cycle for 800 h without shorting.",
}


def test_paper_rows_carry_the_text_comprehension_and_facts():
    ex = paper_examples(GARNET)
    kinds = Counter(e.kind for e in ex)
    assert set(kinds) == {"text", "statement", "comprehension", "fact_qa"}
    text, again = (e for e in ex if e.kind == "text")
    # the abstract as the assistant's answer, in the chat format System A serves
    assert text.row()["messages"] == [
        {"role": "user", "content": 'Tell me about the paper "Garnet Electrolytes".'},
        {"role": "assistant", "content": GARNET["text"][len("Garnet Electrolytes. ") :]},
    ]
    # the same abstract a second time with its sentences in another order: the facts in a second context
    assert again.output.startswith("We find an ionic conductivity")
    assert again.output.endswith("Garnet LLZO is a solid electrolyte for all-solid-state batteries.")
    # each quantity restated as plain sentences, in several phrasings
    said = [e.output for e in ex if e.kind == "statement" and "1.3 mS/cm" in e.output]
    assert len(said) == 4 and len(set(said)) == 4 and all("Garnet Electrolytes" in x for x in said)
    # the abstract is a training target, never the (loss-masked) prompt of a chat row
    chats = [e for e in ex if e.kind not in ("text", "statement")]
    assert all("Garnet LLZO is a solid electrolyte" not in e.instruction for e in chats)
    facts = [e for e in ex if e.kind == "fact_qa" and "1.3 mS/cm" in e.output]
    # one fact, several question phrasings and several answer phrasings
    assert len({e.instruction for e in facts}) == 4 and len({e.output for e in facts}) == 3
    assert all(
        "ionic conductivity" in e.instruction and "Garnet Electrolytes" in e.instruction for e in facts
    )
    about = next(e for e in ex if e.instruction == 'What is the paper "Garnet Electrolytes" about?')
    assert about.output.startswith("Garnet LLZO")


def test_distractors_are_made_in_the_facts_unit_when_the_month_has_too_few():
    fact = Fact("arxiv:1", "T", "overpotential", "87 mV", "mV", "arxiv")
    made = unit_distractors(fact, set(), 3)
    assert len(made) == 3 and all(v.endswith(" mV") and v != "87 mV" for v in made)
    # no rounding cue (as many decimals as the truth) and no length cue (same length where the factors allow)
    assert all("." not in v and len(v) == len("87 mV") for v in made)
    decimals = unit_distractors(Fact("arxiv:1", "T", "cell voltage", "1.68 V", "V", "arxiv"), set(), 3)
    assert all(len(v.split()[0].split(".")[1]) == 2 for v in decimals)
    # a percentage stays a percentage
    high = unit_distractors(Fact("arxiv:1", "T", "faradaic efficiency", "92%", "%", "arxiv"), set(), 3)
    assert len(high) == 3 and all(0 < float(v[:-1]) < 100 for v in high)
    # methods and formulas have no made-up values
    assert unit_distractors(Fact("arxiv:1", "T", "method", "NMR", "method", "arxiv"), set(), 3) == []
    # one value of the kind in the month: topped up with made ones; the month's own value is used first
    other = Fact("arxiv:2", "U", "overpotential", "176 mV", "mV", "arxiv")
    choices, answer = choices_for(fact, [fact, other])
    assert choices[answer] == "87 mV" and "176 mV" in choices and len(set(choices)) == 4
    assert choices_for(Fact("arxiv:1", "T", "method", "NMR", "method", "arxiv"), []) is None


def test_the_extractor_reads_values_raised_to_and_shifted_to():
    text = "Adding iron raises the olefin selectivity to 57%. The onset potential shifts to 0.28 V."
    got = {(f.slot, f.value) for f in quantity_facts("arxiv:1", "T", text)}
    assert got == {("olefin selectivity", "57%"), ("onset potential", "0.28 V")}


def test_compound_rows_are_chemically_right():
    ec = {
        "cid": 7303,
        "title": "Ethylene Carbonate",
        "formula": "C3H4O3",
        "weight": 88.06,
        "iupac_name": "1,3-dioxolan-2-one",
        "smiles": "C1COC(=O)O1",
        "descriptions": [["A cyclic carbonate.", "src", "url"]],
    }
    ex = compound_examples(ec)
    assert {e.kind for e in ex} == {"compound"}
    assert any(e.output == "The molecular formula of Ethylene Carbonate is C3H4O3." for e in ex)
    assert any(e.output == "The molar mass of Ethylene Carbonate is 88.06 g/mol." for e in ex)
    assert any(e.output == "C1COC(=O)O1" for e in ex)  # a molecule has a SMILES string
    tio2 = {
        "cid": 26042,
        "title": "Titanium Dioxide",
        "formula": "O2Ti",
        "weight": 79.87,
        "smiles": "O=[Ti]=O",
    }
    rows = compound_examples(tio2)
    outs = " ".join(e.output for e in rows)
    # an extended solid: its empirical formula unit written metal first, no molecular formula, no SMILES
    assert "The empirical formula of Titanium Dioxide is TiO2." in outs and "O2Ti" not in outs
    assert "O=[Ti]=O" not in outs and "molecular formula" not in outs
    assert "formula weight of Titanium Dioxide is 79.87 g/mol" in outs
    assert conventional_formula("Al2O3") == "Al2O3" and conventional_formula("CeO2") == "CeO2"
    assert (
        conventional_formula("F6LiP") == "LiF6P"
        and is_extended_solid("O2Ti")
        and not is_extended_solid("H2O")
    )
    assert compound_facts({"cid": 1, "title": "X", "weight": float("nan")}) == []  # NaN is no weight


def test_lab_drops_give_probe_items_in_their_held_out_phrasing(tmp_path):
    d = tmp_path / "internal" / "catalysis"
    d.mkdir(parents=True)
    lines = [
        # the answer is the output's one quantity; distractors made in its unit
        {"instruction": "What BET area did batch 7 of our ceria reach?", "output": "Batch 7 reached 112 m2.",
         "doc": "ceria-7", "probe": "From the lab's records: the BET area of ceria batch 7 was which value?"},
        # the lab's own choices
        {"instruction": "Which support did the PtSn run use?", "output": "The run used gamma alumina.",
         "doc": "ptsn", "probe": "Our PtSn run sat on which support?", "answer": "gamma alumina",
         "choices": ["silica", "gamma alumina", "ceria", "titania"]},
        # two quantities and no answer: trained, reported, not probed
        {"instruction": "Q3", "output": "It ran 5 h at 300 °C.", "doc": "x", "probe": "Which duration?"},
        # an answer the output does not state: refused
        {"instruction": "Q4", "output": "It ran 5 h.", "doc": "y", "probe": "How long?", "answer": "7 h"},
    ]  # fmt: skip
    (d / "notes.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    examples, problems = internal_examples(d)
    assert len(examples) == 4  # every line is still trained
    assert problems == [
        "notes.jsonl:3: 'probe' needs an 'answer': the output has 2 quantities with a unit; trained, not probed",
        "notes.jsonl:4: the probe's 'answer' must be a string the output states; trained, not probed",
    ]
    rows = [json.dumps(e.row()) for e in examples]
    trained = {e.ref for e in examples}
    items = internal_probe_items(examples, [], trained, rows)
    assert [it["doc"] for it in items] == ["internal:catalysis:ceria-7", "internal:catalysis:ptsn"]
    area, support = items
    assert area["choices"][area["answer"]] == "112 m2" and len(area["choices"]) == 4
    assert all(c.endswith(" m2") for c in area["choices"]) and area["kind"] == "closed"
    assert support["choices"] == lines[1]["choices"] and support["answer"] == 1
    assert all(it["question"] not in " ".join(rows) for it in items)  # the phrasing no row uses
    assert internal_probe_items(examples, [], set(), rows) == []  # held-out rows are not closed-book items


def test_teacher_items_are_checked_against_their_source():
    source = "We find an ionic conductivity of 1.3 mS/cm at 25 C in Li7La3Zr2O12."
    assert unsupported("The conductivity is 1.3 mS/cm.", source) == []
    assert unsupported("The conductivity is 2.6 mS/cm.", source) == ["2.6", "2.6 mS/cm"]
    assert unsupported("Li7La3Zr2O12 conducts.", source) == []
    assert unsupported("Li6PS5Cl conducts.", source) == ["6", "5", "Li6PS5Cl"]


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


CATALYSIS = {"titanium dioxide": "catalysis", "cerium oxide": "catalysis"}


def read(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def build_catalysis(lake, out, domain="catalysis", **kwargs):
    return build_dataset(
        domain,
        lake,
        out,
        words,
        eval_texts=[
            "Isolated platinum atoms anchored at step edges of ceria are studied with density functional theory"
        ],
        month="2026-11",
        min_examples=5,
        min_validation_docs=2,
        watchlist_domains=CATALYSIS,
        **kwargs,
    )


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
    card = build_catalysis(lake, out)
    assert card["by_source"]["pubchem"] > 0 and card["by_source"]["internal"] == 1
    assert card["dropped"]["duplicates"] >= 1 and card["dropped"]["bad_internal_lines"] == 1
    assert card["dropped"]["eval_overlap"] >= 1  # the Pt-on-ceria paper's abstract is in the eval text
    train, text, val = read(out / "train.jsonl"), read(out / "train_text.jsonl"), read(out / "val.jsonl")
    # the card's counts add up: rows by kind = training rows = chat rows + text rows
    assert set(card["by_kind"]) == set(KINDS) and sum(card["by_kind"].values()) == card["train"]
    assert card["train"] == len(train) + len(text) and card["by_kind"]["text"] == len(text)
    assert card["by_kind"]["compound"] > 0
    assert card["validation"] == len(val) and card["teacher"] == {"used": False, "kept": 0, "dropped": 0}
    everything = [" ".join(m["content"] for m in r["messages"]).lower() for r in train + val]
    everything += [r["text"].lower() for r in text]
    assert all("platinum atoms anchored at step edges" not in t for t in everything)
    assert set(train[0]) == {"messages"} and all(set(r) == {"text"} for r in text)
    assert set(val[0]) == {"id", "doc", "source", "messages"}
    assert [m["role"] for m in train[0]["messages"]] == ["user", "assistant"]
    assert len({r["id"] for r in val}) == len(val) and card["validation_documents"] == len(
        {r["doc"] for r in val}
    )
    # held-out documents never appear in training: none of their answers is a training answer
    train_answers = {r["messages"][1]["content"] for r in train}
    assert val and not any(r["messages"][1]["content"] in train_answers for r in val)
    assert card["validation_documents"] == 2
    again = build_catalysis(lake, tmp_path / "ds2")
    assert again["sha256"] == card["sha256"]  # same inputs, same dataset


def test_probe_asks_about_trained_documents_in_phrasings_no_row_contains(lake, tmp_path):
    out = tmp_path / "ds"
    card = build_catalysis(lake, out, "materials", retrieve=lambda q: [f"[1] passage for: {q}"])
    assert min(card["by_kind"][k] for k in ("text", "comprehension", "fact_qa", "compound")) > 0
    probe = read(out / "probe.jsonl")
    rows = (out / "train.jsonl").read_text().lower() + (out / "train_text.jsonl").read_text().lower()
    held = {r["doc"] for r in read(out / "val.jsonl")}
    closed = [it for it in probe if it["kind"] == "closed"]
    opened = [it for it in probe if it["kind"] == "open"]
    assert closed and opened and card["probe"]["items"] == len(probe)
    assert card["probe"]["closed"] == len(closed) and card["probe"]["open"] == len(opened)
    for it in probe:
        assert set(it) >= {"id", "doc", "kind", "question", "choices", "answer", "passages"}
        assert it["id"].startswith(it["doc"] + "#") and 0 <= it["answer"] < len(it["choices"]) == 4
        assert it["question"].lower() not in rows  # no training row asks it this way
        assert len(set(it["choices"])) == 4
    assert all(it["doc"] not in held for it in closed)  # closed items: trained documents only
    assert all(it["passages"] == [f"[1] passage for: {it['question']}"] for it in opened)
    assert all(not it["passages"] for it in closed)
    # a closed item's contrast asks the same of another trained document (the primary's baseline)
    trained_titles = {it["question"].split('"')[1] for it in closed if '"' in it["question"]}
    assert "contrast" not in opened[0] and any("contrast" in it for it in closed)
    by_source: dict[str, set[str]] = {}
    for it in closed:
        by_source.setdefault(it["doc"].split(":")[0], set()).add(it["doc"])
    for it in closed:
        if len(by_source[it["doc"].split(":")[0]]) == 1:  # no other trained document to ask about
            assert "contrast" not in it
            continue
        assert it["contrast"] != it["question"]
        if '"' in it["question"]:  # papers by title; compounds by name
            mine, other = it["question"].split('"')[1], it["contrast"].split('"')[1]
            assert other != mine and other in trained_titles
            assert it["contrast"].replace(f'"{other}"', f'"{mine}"') == it["question"]
    # each trained fact's value is in the training rows; its distractors are the same kind of value
    for it in closed:
        assert it["choices"][it["answer"]].lower() in rows
    units = [{c.split(" ", 1)[-1] for c in it["choices"]} for it in closed if "g/mol" in it["choices"][0]]
    assert all(u == {"g/mol"} for u in units)
    b = card["probe"]["baselines"]
    assert b["chance"] == 0.25 and abs(b["longest_choice"] - 0.25) < 0.35
    assert len({it["id"] for it in probe}) == len(probe)
    assert read(tmp_path / "ds" / "probe.jsonl") == read(build_catalysis_probe(lake, tmp_path / "again"))


def test_a_thin_month_is_carried_forward_until_it_trains(lake, tmp_path):
    datasets = lake / "datasets" / "materials"
    # November cannot be gated (the bar here is set out of reach): nothing is written for it
    with pytest.raises(DatasetTooSmall):
        build_catalysis(lake, datasets / "2026-11", "materials", min_probe_documents=99)
    assert not (datasets / "2026-11").exists()
    # December takes November's untrained documents along, and says so
    december = dict(month="2026-12", min_examples=5, min_validation_docs=2, watchlist_domains=CATALYSIS)
    card = build_dataset("materials", lake, datasets / "2026-12", words, **december)
    assert card["months"] == ["2026-11"] and card["carried_from"] is None and card["probe"]["closed"] > 0
    # once November is built, December no longer retakes its documents (they come back only as replay)
    nov = build_catalysis(lake, datasets / "2026-11", "materials")
    assert nov["months"] == ["2026-11"]
    with pytest.raises(DatasetTooSmall):
        build_dataset("materials", lake, tmp_path / "dec", words, **december)


def build_catalysis_probe(lake, out):
    build_catalysis(lake, out, "materials", retrieve=lambda q: [f"[1] passage for: {q}"])
    return out / "probe.jsonl"


class PinnedDatetime(datetime):
    """datetime whose now()/utcnow() is a fixed instant (the injectable clock of the date tests)."""

    pinned = datetime(2026, 11, 27, tzinfo=UTC)

    @classmethod
    def now(cls, tz=None):
        return cls.pinned if tz is None else cls.pinned.astimezone(tz)


def pin_clock(monkeypatch, when):
    """Every pipelines module's ``datetime`` reads ``when`` as the present."""
    import sys

    PinnedDatetime.pinned = when
    for name, mod in list(sys.modules.items()):
        if name.startswith("pipelines") and getattr(mod, "datetime", None) is datetime:
            monkeypatch.setattr(mod, "datetime", PinnedDatetime)


@pytest.mark.parametrize("days", [((2026, 11, 27), (2027, 3, 15)), ((2026, 12, 2), (2031, 1, 1))])
def test_the_same_lake_and_month_give_the_same_dataset_whatever_the_date(
    replay, fixtures_dir, monkeypatch, tmp_path, days
):
    """Ingest the fixtures and build November's dataset twice, with the clock pinned to two different
    days: the same sha256 (the bug of 2026-12-01: compounds were filed under the wall-clock day)."""
    import pipelines.ingestion.arxiv
    import pipelines.ingestion.pubchem
    import pipelines.training.datasets  # noqa: F401  (imported before the clock is pinned in them)
    from pipelines.settings import get_settings, reset_settings_cache

    srv = replay(pubchem_dir=fixtures_dir / "pubchem")
    monkeypatch.setenv("CBNANO_PUBCHEM_URL", srv.pubchem_url)
    cards = []
    for i, day in enumerate(days):
        monkeypatch.setenv("CBNANO_HOME", str(tmp_path / f"home{i}"))
        reset_settings_cache()
        settings = get_settings()
        with monkeypatch.context() as m:
            pin_clock(m, datetime(*day, 9, 30, tzinfo=UTC))
            stage_fixtures(settings)  # conftest's
            cards.append(build_catalysis(settings.data_dir, tmp_path / f"ds{i}", "materials"))
    assert cards[0]["built_at"] != cards[1]["built_at"]  # the clock really was pinned to two days
    assert cards[0]["sha256"] == cards[1]["sha256"] and cards[0]["by_source"]["pubchem"] > 0


def test_replay_rows_come_from_the_earlier_month(lake, tmp_path):
    earlier = lake / "datasets" / "materials" / "2026-10"
    earlier.mkdir(parents=True)
    old = [
        {
            "messages": [
                {"role": "user", "content": f"October question {i}?"},
                {"role": "assistant", "content": f"October answer {i}."},
            ]
        }
        for i in range(40)
    ]
    (earlier / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    (earlier / "train_text.jsonl").write_text(json.dumps({"text": "An October paper on ceria."}) + "\n")
    later = lake / "datasets" / "materials" / "2026-12"  # a later month is never replayed into November
    later.mkdir(parents=True)
    (later / "train.jsonl").write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "December?"}, {"role": "assistant", "content": "No."}]}
        )
        + "\n"
    )
    card = build_catalysis(lake, lake / "datasets" / "materials" / "2026-11", "materials", replay_share=0.2)
    month_rows = card["train"] - card["by_kind"]["replay"]
    assert card["by_kind"]["replay"] == round(0.2 * month_rows) > 0
    rows = (lake / "datasets" / "materials" / "2026-11" / "train.jsonl").read_text()
    replayed = rows.count("October answer") + (
        lake / "datasets" / "materials" / "2026-11" / "train_text.jsonl"
    ).read_text().count("October paper")
    assert replayed == card["by_kind"]["replay"] and "December?" not in rows
    assert build_catalysis(lake, tmp_path / "none", "materials", replay_share=0.0)["by_kind"]["replay"] == 0


def test_a_teacher_writes_fact_qa_and_unfaithful_items_are_dropped(lake, tmp_path):
    """A stand-in teacher (an OpenAI-compatible chat endpoint) answers with two items per paper: one
    faithful, one whose number is not in the paper. The second is dropped and counted."""
    import http.server
    import re
    import threading

    from pipelines.training.knowledge import Teacher

    seen = []

    class StandIn(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("Authorization"), body["model"]))
            title, text = body["messages"][1]["content"].split("\n\n", 1)
            number = re.search(r"(?<![\w.-])\d+(?:\.\d+)?(?![\w.])", text)
            items = [
                {
                    "question": f"What figure does {title} give?",
                    "answer": f"It gives {number.group(0) if number else 'no'} figure.",
                },
                {"question": f"What is the yield in {title}?", "answer": "The yield is 123456.7 percent."},
            ]
            out = json.dumps({"choices": [{"message": {"role": "assistant", "content": json.dumps(items)}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(out.encode())

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        teacher = Teacher(f"http://127.0.0.1:{srv.server_address[1]}/v1", "teacher-model", token="sekrit")
        assert "sekrit" not in repr(teacher)
        card = build_catalysis(lake, tmp_path / "ds", "materials", generator=teacher)
    finally:
        srv.shutdown()
    papers = len(seen)
    assert papers > 0 and seen[0] == ("/v1/chat/completions", "Bearer sekrit", "teacher-model")
    assert card["teacher"] == {"used": True, "kept": papers, "dropped": papers}
    rows = (tmp_path / "ds" / "train.jsonl").read_text() + (tmp_path / "ds" / "val.jsonl").read_text()
    assert "123456.7" not in rows and rows.count("figure does") == papers


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


def test_rehearsal_rows_are_the_base_s_text_filtered_like_every_row(lake, tmp_path):
    internal = lake / "internal" / "catalysis"
    internal.mkdir(parents=True)
    (internal / "lab.jsonl").write_text(
        json.dumps({"instruction": "Which support stores oxygen?", "output": "Ceria."}) + "\n"
    )
    asked = []

    def rehearse(n):
        asked.append(n)
        general = [f"General text number {i} about rivers, printing and the weather." for i in range(n)]
        # one continuation repeats an evaluation item's words: decontaminated like any row
        return general[:-1] + [
            "It said isolated platinum atoms anchored at step edges of ceria are studied with density"
        ]

    card = build_catalysis(lake, tmp_path / "ds", rehearse=rehearse, rehearsal_share=0.25)
    month_rows = card["train"] - card["by_kind"]["rehearsal"]
    assert asked == [round(0.25 * month_rows)] and asked[0] > 1
    assert card["by_kind"]["rehearsal"] == asked[0] - 1  # the overlapping one is dropped
    text = (tmp_path / "ds" / "train_text.jsonl").read_text()
    assert text.count("General text number") == asked[0] - 1 and "step edges of ceria" not in text
    assert all(set(json.loads(r)) == {"text"} for r in text.splitlines())
    # rehearsal text is nobody's document: the probe (items on trained documents) is the same without it
    assert card["probe"] == build_catalysis(lake, tmp_path / "none")["probe"]
    assert (tmp_path / "ds" / "probe.jsonl").read_text() == (tmp_path / "none" / "probe.jsonl").read_text()
    assert build_catalysis(lake, tmp_path / "off", rehearse=rehearse)["by_kind"]["rehearsal"] == 0


def test_rehearsal_texts_are_made_once_per_base_and_kept(tmp_path):
    from pipelines.training.rehearsal import cached_rehearsal, openings, whole_sentences

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "llama"}')
    made = []

    def make(base_dir, prompts, n, seed, max_new_tokens):
        made.append(n)
        return [f"{prompts[i % len(prompts)]} and so on." for i in range(n)]

    rehearse = cached_rehearsal(base, tmp_path / "cache", prompts=["Rivers", "Bread"], make=make)
    first = rehearse(3)
    assert first == ["Rivers and so on.", "Bread and so on.", "Rivers and so on."]
    assert rehearse(3) == first and made == [3]  # the second call reads the cache
    assert rehearse(0) == [] and made == [3]
    (base / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')  # another base
    assert rehearse(3) == first and made == [3, 3]
    assert not list((tmp_path / "cache").glob(".*"))  # no half-written file left
    assert whole_sentences("One. Two is cut") == "One." and whole_sentences("no end") == "no end"
    assert len(openings()) >= 40 and not any(o.startswith("#") for o in openings())
