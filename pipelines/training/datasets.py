"""Monthly training sets per domain, built from what the platform ingested: the month's knowledge as targets.

``build_dataset`` gathers, for one domain and month, per document routed to the domain
(:mod:`pipelines.training.knowledge` holds the extractor and the phrasings):

* **text** rows: the paper's abstract as the assistant's answer to a question naming it by title, twice (the
  second time with its sentences in another order, so the facts are seen in two contexts);
* **statement** rows: each quantity fact restated in several sentences (:data:`knowledge.STATEMENTS`), also
  as the assistant's turns. Facts are learnt from many restatements seen several times (issue 23), and rows in
  the chat format System A serves leave the base's raw-text modelling alone (raw completion rows raised the
  general-text loss by 1.4 nats/token); ``train_text.jsonl`` keeps only replayed raw text of older months;
* **comprehension** rows mined from the text: what the paper is about (asked by its title only), and each
  sentence continued from its first half;
* **fact_qa** rows, closed-book: each fact (a quantity with its unit, a method) in several question and answer
  phrasings, written by the rule-based extractor or, with ``CBNANO_TEACHER_URL``, by a teacher model whose
  items are checked against the source (unfaithful ones dropped and counted);
* **compound** rows from PubChem records, chemically right: an extended solid (TiO2, Al2O3) has an empirical
  formula unit written metal first and no SMILES row;
* **internal** rows, the lab's own drops: ``CBNANO_DATA_DIR/internal/<domain>/*.jsonl`` lines with
  ``instruction``, optional ``input`` and ``output``; a bad line is reported with its file and line number;
* **replay** rows: a share (``CBNANO_REPLAY_SHARE``, default 0.2) of the domain's earlier months' training
  rows, against forgetting;
* **rehearsal** rows: a share (``CBNANO_REHEARSAL_SHARE``, default 0: off, see docs/BENCHMARKS.md; none for test profiles) of the
  base model's own continuations of general openings, as plain completions (:mod:`pipelines.training.rehearsal`),
  against forgetting general language.

Then: exact duplicates removed; examples longer than ``max_tokens`` (the base tokenizer's count, passed in as
``count_tokens``) dropped; examples sharing any ``ngram``-word shingle with the evaluation sets dropped
(decontamination); a deterministic train/validation split by **document** (a held-out document's every row is
held out, in this month or any other).

Besides ``train.jsonl`` (chat rows ``{"messages": [...]}``), ``train_text.jsonl`` and ``val.jsonl`` (held-out
chat rows with ``id`` and ``doc``, for the secondary held-out loss), it writes ``probe.jsonl``, the knowledge
probe the gate decides on (see :func:`probe_items`), and ``dataset_card.json`` (rows by kind, teacher items
kept and dropped, the probe's size and its no-model baselines, token statistics, sha256). Returns the card.
Too little to train on → :class:`DatasetTooSmall`, and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict, cast

from pipelines.assets import asset
from pipelines.contracts import CompoundRecord, DatasetCard, LakeRecord, PaperRecord, ProbeItem, RatedAnswer
from pipelines.lake import read_jsonl, staged_records, write_json, write_jsonl
from pipelines.training.knowledge import (
    QA,
    Fact,
    FactQA,
    RuleBasedQA,
    choices_for,
    compound_facts,
    comprehension_rows,
    fact_rows,
    is_extended_solid,
    item_id,
    paper_abstract,
    paper_facts,
    probe_baselines,
    probe_question,
    quantities_in,
    reordered,
    statement_rows,
    states,
)
from pipelines.training.rehearsal import Rehearse
from pipelines.windows import month_end, parse_month

Retrieve = Callable[[str], list[str]]  # question -> the passages `cbnano ask` would show for it


class DatasetTooSmall(Exception):
    """Not enough examples to train on; the message gives the counts. A run that meets it is reported as
    "not trained: <message>" (CLI exit 1, the DAG's domain listed as not trained), never as a gate decision."""


MEANING_OVERLAP = 0.9  # cosine (MiniLM) at which a training example says what an evaluation item says
KINDS = (
    "text",
    "statement",
    "comprehension",
    "fact_qa",
    "compound",
    "replay",
    "internal",
    "feedback",
    "rehearsal",
)
TEXT_KINDS = ("text", "statement", "rehearsal")  # completion rows (``{"text"}``) when without instruction


@dataclass(frozen=True)
class Example:
    """One training example and where it came from: a chat turn (``instruction`` [+ ``input``] → ``output``)
    or, for a kind in :data:`TEXT_KINDS` (a document's text, a fact's restatement), a completion target
    (``output``)."""

    instruction: str
    input: str
    output: str
    source: str  # "pubchem", "arxiv", "internal", "replay" or "rehearsal"
    ref: str  # the document it came from (arxiv:ID, pubchem:CID, a lab-drop reference, replay:MONTH)
    kind: str = "internal"  # one of KINDS
    # a lab drop's held-out check of this row's fact: (question in a phrasing no row uses, right value, choices
    # the lab wrote or empty); never part of the row itself
    probe: tuple[str, str, tuple[str, ...]] | None = None

    def key(self) -> str:
        """Content hash: identical examples share it; the split is decided by it."""
        norm = "\x1f".join(" ".join(x.lower().split()) for x in (self.instruction, self.input, self.output))
        return hashlib.sha256(norm.encode()).hexdigest()

    def text(self) -> str:
        """All of the example's text (for length and overlap checks)."""
        return f"{self.instruction}\n{self.input}\n{self.output}".strip()

    def messages(self) -> list[dict[str, str]]:
        """The example as a chat: the instruction (and its input) from the user, the output as the answer."""
        user = f"{self.instruction}\n\n{self.input}" if self.input else self.instruction
        return [{"role": "user", "content": user}, {"role": "assistant", "content": self.output}]

    def row(self) -> dict[str, Any]:
        """The training row: ``{"text"}`` for a text example without an instruction (replayed raw text, the
        base's rehearsal text), else
        ``{"messages"}``."""
        raw = self.kind in TEXT_KINDS and not self.instruction
        return {"text": self.output} if raw else {"messages": self.messages()}


def domains_file() -> Path:
    """``include/domains.yaml``: which papers and compounds feed each domain's dataset."""
    return asset("include", "domains.yaml")


class DomainRoute(TypedDict):
    """What routes documents to a domain (``include/domains.yaml``)."""

    description: str  # what the router compares papers with, by meaning
    categories: set[str]  # arXiv categories
    keywords: list[str]  # whole words, without an embedding model
    watchlist_domains: set[str]  # the compound watchlist's domains that feed it


def load_domains(path: Path | None = None) -> dict[str, DomainRoute]:
    """The routing config (default :func:`domains_file`): {domain: {description, categories, keywords,
    watchlist_domains}}."""
    import yaml

    config = yaml.safe_load((path or domains_file()).read_text())
    return {
        name: {
            "description": str(d.get("description") or ""),
            "categories": set(d.get("categories") or []),
            "keywords": list(d.get("keywords") or []),
            "watchlist_domains": set(d.get("watchlist_domains") or []),
        }
        for name, d in config["domains"].items()
    }


def _has_keyword(text: str, keywords: Iterable[str]) -> bool:
    low = text.lower()
    return any(re.search(r"(?<![\w-])" + re.escape(k.lower()) + r"(?![\w-])", low) for k in keywords)


def latest_papers(
    data_dir: Path, until: datetime | None = None, since: date | None = None
) -> list[PaperRecord]:
    """The newest staged arXiv record of each paper (staged from ``since`` to ``until``, both optional)."""
    return cast(list[PaperRecord], _latest_records(data_dir, "arxiv", until, since))


def latest_compounds(
    data_dir: Path, until: datetime | None = None, since: date | None = None
) -> list[CompoundRecord]:
    """The newest staged PubChem record of each compound (staged from ``since`` to ``until``)."""
    return cast(list[CompoundRecord], _latest_records(data_dir, "pubchem", until, since))


def _latest_records(
    data_dir: Path, source: str, until: datetime | None, since: date | None = None
) -> list[dict[str, Any]]:
    # the lake's records.jsonl of a source hold what its stage step wrote: PaperRecord or CompoundRecord
    best: dict[str, tuple[str, dict[str, Any]]] = {}
    for f in staged_records(data_dir, [source], first_day=since, last_day=until.date() if until else None):
        for rec in f.records():
            key = (f.day, str(rec.get("version", 0)).zfill(4))
            stamp = "|".join(key)
            if rec["doc_id"] not in best or stamp >= best[rec["doc_id"]][0]:
                best[rec["doc_id"]] = (stamp, rec)
    return [rec for _, rec in best.values()]


def _from_qa(rows: Iterable[QA], source: str) -> list[Example]:
    return [Example(q.question, "", q.answer, source, q.doc, q.kind) for q in rows]


def paper_examples(rec: PaperRecord, generator: FactQA | None = None) -> list[Example]:
    """A staged arXiv record's text row, comprehension rows and fact QA rows (``generator``: the teacher,
    or by default the rule-based extractor)."""
    title, abstract = paper_abstract(rec)
    if len(abstract.split()) < 5:
        return []
    ref = f"arxiv:{rec['doc_id']}"
    facts = paper_facts(rec)
    # the text and the statements as the assistant's turns, in the chat format System A serves: trained as raw
    # completions (issue 23's first recipe) they raised the general-text loss by 1.4 nats/token
    out = [Example(f'Tell me about the paper "{title}".', "", abstract, "arxiv", ref, "text")]
    second = reordered(abstract)
    if second:  # the same facts in another order: a second context to learn them from
        out.append(Example(f'What does the work "{title}" report?', "", second, "arxiv", ref, "text"))
    out += [
        Example(f'State a result of "{title}".', "", line, "arxiv", ref, "statement")
        for line in statement_rows(facts)
    ]
    out += _from_qa(comprehension_rows(ref, title, abstract), "arxiv")
    out += _from_qa((generator or RuleBasedQA()).qa(ref, title, abstract, facts), "arxiv")
    return out


def compound_examples(rec: CompoundRecord) -> list[Example]:
    """A staged PubChem record's facts in several phrasings (see :func:`knowledge.compound_facts`: an extended
    solid gets its empirical formula unit and no SMILES), its IUPAC name, SMILES (molecules only) and its
    first description."""
    name = rec.get("title") or rec.get("iupac_name")
    if not name:
        return []
    ref = f"pubchem:{rec['cid']}"
    out = _from_qa(fact_rows(compound_facts(rec)), "pubchem")

    def add(questions: list[str], answer: str) -> None:
        out.extend(Example(q, "", answer, "pubchem", ref, "compound") for q in questions)

    if rec.get("iupac_name") and rec["iupac_name"] != name:
        add([f"What is the IUPAC name of {name}?"], f"The IUPAC name of {name} is {rec['iupac_name']}.")
    if rec.get("smiles") and not (rec.get("formula") and is_extended_solid(rec["formula"])):
        add(
            [f"Write the SMILES string of {name}.", f"What is the SMILES notation for {name}?"], rec["smiles"]
        )
    for text, _source, _url in rec.get("descriptions", []):
        add([f"Describe {name}.", f"What is {name}?"], text)
        break
    return out


MAX_LINE_CHARS = 200_000  # a lab-drop line longer than this cannot fit any sequence length we train with


def domain_of(folder: Path) -> str:
    """The domain a lab-drop folder belongs to (its name)."""
    return folder.name


def internal_examples(folder: Path) -> tuple[list[Example], list[str]]:
    """Examples from the lab's JSONL drops, and one message per bad line (``file:line: reason``).

    Lines that state the same fact several ways may share a ``doc`` key, so they land on the same side of
    the train/validation split.
    """
    examples, problems = [], []
    root = folder.resolve()
    for f in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        if f.is_symlink() and not f.resolve().is_relative_to(root):
            problems.append(f"{f.name}: a link to {f.resolve()}, outside the drop folder; skipped")
            continue
        # stat, never open, what is not a regular file: a FIFO would block the build, a folder or a dangling
        # link would fail it
        if not f.is_file():
            what = "a dangling link" if f.is_symlink() and not f.exists() else "not a regular file"
            problems.append(f"{f.name}: {what}; skipped")
            continue
        try:
            # JSONL lines end at "\n" only: U+2028 or NEL inside a JSON string is text, not a line break; a
            # UTF-8 byte-order mark at the start of the file is not part of line 1
            content = f.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            problems.append(
                f"{f.name}: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); skipped"
            )
            continue
        except OSError as exc:
            problems.append(f"{f.name}: unreadable ({exc.strerror or exc}); skipped")
            continue
        for n, line in enumerate(content.split("\n"), 1):
            if not line.strip():
                continue
            where = f"{f.name}:{n}"
            if len(line) > MAX_LINE_CHARS:
                problems.append(
                    f"{where}: {len(line):,} characters, longer than any example that fits; skipped"
                )
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: not JSON ({exc.msg})")
                continue
            except RecursionError:
                problems.append(f"{where}: JSON nested too deep")
                continue
            if not isinstance(obj, dict):
                problems.append(f"{where}: not a JSON object")
                continue
            missing = [
                k for k in ("instruction", "output") if not isinstance(obj.get(k), str) or not obj[k].strip()
            ]
            if missing:
                problems.append(f"{where}: missing or empty {', '.join(missing)}")
                continue
            if not isinstance(obj.get("input", ""), str):
                problems.append(f"{where}: 'input' must be a string")
                continue
            doc = obj.get("doc")
            ref = f"internal:{domain_of(folder)}:{doc}" if isinstance(doc, str) and doc.strip() else where
            probe, why = _drop_probe(obj)
            if why:
                problems.append(f"{where}: {why}; trained, not probed")
            examples.append(
                Example(
                    obj["instruction"].strip(),
                    obj.get("input", "").strip(),
                    obj["output"].strip(),
                    "internal",
                    ref.replace("#", "_"),  # '#' separates a probe item's document from the rest of its id
                    "internal",
                    probe,
                )
            )
    return examples, problems


def _drop_probe(obj: dict[str, Any]) -> tuple[tuple[str, str, tuple[str, ...]] | None, str]:
    """A lab-drop line's probe (``probe``: the fact asked in a phrasing of the lab's that no row uses;
    ``answer``: the right value, by default the one quantity with a unit in ``output``; optional ``choices``:
    the lab's own distractors with the answer among them) and the reason it cannot be used ("" when fine)."""
    question = obj.get("probe")
    if question is None:
        return None, ""
    if not isinstance(question, str) or not question.strip():
        return None, "'probe' must be a non-empty string"
    output = obj["output"]
    answer = obj.get("answer")
    if answer is None:
        found = quantities_in(output)
        if len(found) != 1:
            return None, f"'probe' needs an 'answer': the output has {len(found)} quantities with a unit"
        answer = found[0][0]
    if not isinstance(answer, str) or not states(output, answer):
        return None, "the probe's 'answer' must be a string the output states"
    choices = obj.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        return None, "'choices' must be a list of strings"
    if choices and (answer not in choices or len(set(choices)) != len(choices) or len(choices) < 2):
        return None, "'choices' must hold the answer once among at least two different values"
    return (question.strip(), answer, tuple(choices)), ""


def internal_probe_items(
    examples: Iterable[Example], pool: list[Fact], trained: set[str], train_texts: list[str]
) -> list[ProbeItem]:
    """Closed-book probe items from the lab's drops (see :func:`_drop_probe`) on trained rows: the lab's
    question, its choices or the answer among distractors of its unit (:func:`knowledge.choices_for`), so
    internal knowledge is measured like the papers'. A question a training row contains is left out."""
    lowered = [t.lower() for t in train_texts]
    items: list[ProbeItem] = []
    for e in examples:
        if e.probe is None or e.ref not in trained:
            continue
        question, value, own = e.probe
        if any(question.lower() in t for t in lowered):
            continue
        unit = [u for v, u in quantities_in(value) if v == value]
        fact = Fact(e.ref, e.instruction, "answer", value, unit[0] if unit else "internal", "internal")
        if own:
            picked: tuple[list[str], int] | None = (list(own), own.index(value))
        else:
            picked = choices_for(fact, pool)
        if picked is None:
            continue
        choices, answer = picked
        items.append(
            {
                "id": item_id(fact, "closed"),
                "doc": e.ref,
                "kind": "closed",
                "question": question,
                "choices": choices,
                "answer": answer,
                "passages": [],
                "held_out": False,
            }
        )
    return items


_CITATION = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")


def feedback_examples(rated: Iterable[RatedAnswer]) -> list[Example]:
    """Rows from the gateway's positively rated ``+rag`` answers (``question``, ``answer``, ``id``): the question
    and the answer without its ``[n]`` citations, which name sources the training row does not show."""
    out = []
    for r in rated:
        question, answer = str(r.get("question") or "").strip(), str(r.get("answer") or "")
        answer = _CITATION.sub("", answer).strip()
        if question and answer:
            out.append(Example(question, "", answer, "feedback", f"feedback:{r.get('id', '')}", "feedback"))
    return out


def shingles(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of ``text`` (lower-case, punctuation stripped)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def doc_position(ref: str) -> float:
    """Where a document falls in [0, 1) for the split: a hash of its reference, so it never moves."""
    return int(hashlib.sha256(ref.encode()).hexdigest()[:8], 16) / 2**32


def is_validation(example: Example, val_percent: int) -> bool:
    """Deterministic split by document: every example of a document lands on the same side, always."""
    return doc_position(example.ref) < val_percent / 100


def held_out_documents(refs: Iterable[str], val_percent: int, min_docs: int) -> set[str]:
    """The documents held out: those below ``val_percent`` in :func:`doc_position`, or, while that is fewer
    than ``min_docs`` (a small corpus), the ``min_docs`` lowest. The same corpus always gives the same set;
    with a lab-sized corpus it is the fixed hash split, so a held-out document stays held out every month."""
    ordered = sorted(set(refs), key=doc_position)
    by_share = [r for r in ordered if doc_position(r) < val_percent / 100]
    return set(by_share if len(by_share) >= min_docs else ordered[:min_docs])


Router = Callable[[list[tuple[str, set[str]]]], list[list[str]]]  # (text, categories) -> domains, best first


def carried_since(data_dir: Path, domain: str, month: str | None) -> tuple[date | None, str | None]:
    """(first day of the documents the month's dataset takes, the last month built before it): the day after
    the last earlier month of ``domain`` whose dataset was built (it has a ``dataset_card.json``), so the
    documents of a month too thin to train (none written) are carried forward until enough have gathered;
    earlier documents come back only as replay. (None, None) without a month or an earlier built month."""
    if not month:
        return None, None
    root = data_dir / "datasets" / domain
    found = root.iterdir() if root.is_dir() else iter(())
    built = sorted(
        d.name for d in found if _is_month(d.name) and d.name < month and (d / "dataset_card.json").is_file()
    )
    if not built:
        return None, None
    return (month_end(built[-1]) + timedelta(days=1)).date(), built[-1]


def _routed_records(
    domain: str,
    cfg: DomainRoute,
    data_dir: Path,
    until: datetime | None,
    watchlist_domains: dict[str, str],
    router: Router | None,
    since: date | None = None,
) -> Iterator[LakeRecord]:
    papers = latest_papers(data_dir, until, since)
    if router is not None:  # by meaning: categories plus similarity to each domain's description
        routes = router([(rec["text"], set(rec.get("categories", []))) for rec in papers])
        yield from (rec for rec, to in zip(papers, routes, strict=True) if domain in to)
    else:  # no embedding model in this environment: categories and whole-word keywords
        for rec in papers:
            if set(rec.get("categories", [])) & cfg["categories"] or _has_keyword(
                rec["text"], cfg["keywords"]
            ):
                yield rec
    for comp in latest_compounds(data_dir, until, since):
        names = [comp.get("title", "")] + list(comp.get("synonyms", []))
        in_watch = any(watchlist_domains.get(n.lower()) in cfg["watchlist_domains"] for n in names if n)
        if in_watch or _has_keyword(comp.get("text", ""), cfg["keywords"]):
            yield comp


def replay_examples(data_dir: Path, domain: str, month: str | None, n: int) -> list[Example]:
    """Up to ``n`` training rows of the domain's earlier months (the newest months first; within a month a
    fixed hash order), as ``replay`` examples; none without a month or earlier datasets."""
    if not month or n <= 0:
        return []
    root = data_dir / "datasets" / domain
    found = root.iterdir() if root.is_dir() else iter(())
    earlier = sorted((d for d in found if d.is_dir() and _is_month(d.name) and d.name < month), reverse=True)
    out: list[Example] = []
    for folder in earlier:
        rows: list[Example] = []
        for name in ("train.jsonl", "train_text.jsonl"):
            if not (folder / name).is_file():
                continue
            for row in read_jsonl(folder / name):
                ref = f"replay:{folder.name}"
                if isinstance(row.get("text"), str):
                    rows.append(Example("", "", row["text"], "replay", ref, "text"))
                elif isinstance(row.get("messages"), list) and len(row["messages"]) == 2:
                    user, answer = (str(m.get("content", "")) for m in row["messages"])
                    rows.append(Example(user, "", answer, "replay", ref, "replay"))
        rows.sort(key=Example.key)
        out += rows[: n - len(out)]
        if len(out) >= n:
            break
    return out


def _is_month(name: str) -> bool:
    try:
        return parse_month(name) == name
    except ValueError:
        return False


def month_facts(data_dir: Path, until: datetime | None) -> list[Fact]:
    """The facts of every document staged by ``until``, whatever its domain: the probe's distractor pool."""
    facts = [f for rec in latest_papers(data_dir, until) for f in paper_facts(rec)]
    return facts + [f for rec in latest_compounds(data_dir, until) for f in compound_facts(rec)]


def probe_items(
    facts: list[Fact],
    pool: list[Fact],
    trained: set[str],
    held: set[str],
    train_texts: list[str],
    retrieve: Retrieve | None,
) -> list[ProbeItem]:
    """The knowledge probe, one multiple-choice item per line (``id``, ``doc``, ``kind``, ``question``,
    ``choices``, ``answer``, ``passages``): ``closed`` items on the facts of **trained** documents, in a
    phrasing no training row contains; ``open`` items (with ``retrieve``: the passages ``cbnano ask`` shows
    for the question) on trained and held-out documents. Distractors are the same kind of fact from the
    month's other documents (``pool``). A document's methods give one item (the first)."""
    lowered = [t.lower() for t in train_texts]
    items: list[ProbeItem] = []
    asked: set[tuple[str, str]] = set()
    # each closed item is also asked about another trained document of its source (``contrast``): what the
    # document's name adds to a value is the knowledge; what the property asked adds is format
    titles: dict[str, list[str]] = {}
    for f in facts:
        if f.doc in trained and f.title and f.title not in titles.setdefault(f.source, []):
            titles[f.source].append(f.title)
    for fact in facts:
        if (fact.doc, fact.slot) in asked:
            continue
        picked = choices_for(fact, pool)
        if picked is None:
            continue
        asked.add((fact.doc, fact.slot))
        choices, answer = picked
        asks = ([("closed", 0), ("closed", 1)] if fact.doc in trained else []) + (
            [("open", 0)] if retrieve and fact.source == "arxiv" and fact.doc in trained | held else []
        )
        for kind, variant in asks:
            question = probe_question(fact, kind, variant)
            if question is None:
                continue
            if any(question.lower() in t for t in lowered):
                continue  # a training row asks it this way: it would test the format, not the knowledge
            item: ProbeItem = {
                "id": item_id(fact, kind, variant),
                "doc": fact.doc,
                "kind": kind,
                "question": question,
                "choices": choices,
                "answer": answer,
                "passages": retrieve(question) if kind == "open" and retrieve else [],
                "held_out": fact.doc in held,
            }
            other = contrast_title(fact, titles.get(fact.source, []), variant)
            if kind == "closed" and other is not None:
                item["contrast"] = probe_question(replace(fact, title=other), kind, variant) or ""
            items.append(item)
    return items


def contrast_title(fact: Fact, titles: Sequence[str], variant: int = 0) -> str | None:
    """Another trained document's title for ``fact``'s contrast question (a fixed pick per fact and phrasing,
    so a rebuilt probe is identical), or None when the month trained no other document of its source."""
    others = sorted(t for t in titles if t != fact.title)
    if not others:
        return None
    h = int(hashlib.sha256(f"{fact.doc}|{fact.slot}|{variant}".encode()).hexdigest()[:8], 16)
    return others[h % len(others)]


def build_dataset(
    domain: str,
    data_dir: Path,
    out_dir: Path,
    count_tokens: Callable[[str], int],
    eval_texts: Iterable[str] = (),
    month: str | None = None,
    max_tokens: int = 384,
    val_percent: int = 10,
    min_examples: int = 20,
    min_validation_docs: int = 3,  # the gate decides on trained documents; held out: secondary figures
    ngram: int = 8,
    watchlist_domains: dict[str, str] | None = None,
    domains: dict[str, DomainRoute] | None = None,
    generator: FactQA | None = None,
    replay_share: float = 0.2,
    retrieve: Retrieve | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    min_probe_documents: int = 2,
    router: Router | None = None,
    embed: Callable[[list[str]], Any] | None = None,
    feedback: Sequence[RatedAnswer] = (),
    rehearse: Rehearse | None = None,
    rehearsal_share: float = 0.0,
) -> DatasetCard:
    """Build and write one domain's dataset (see module docstring); returns the dataset card.

    ``router`` sends papers to domains (:class:`pipelines.training.routing.MeaningRouter`'s ``route``; without
    one, categories and keywords); ``embed`` (unit vectors per text) also drops examples whose meaning is
    that of an evaluation item (cosine >= ``MEANING_OVERLAP``); ``generator`` writes the fact QA rows (default: the rule-based extractor); ``retrieve`` gives the open
    probe items their passages (without it the probe has closed items only); ``rehearse`` writes the base's
    general text for the rehearsal rows (``rehearsal_share`` of the trained rows); ``clock`` stamps the card's
    ``built_at`` and nothing else: the rows, the probe and the sha256 depend only on the lake and the month.
    """
    domains = domains or load_domains()
    if domain not in domains:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(sorted(domains))}")
    until = month_end(month) if month else None
    since, built_before = carried_since(data_dir, domain, month)
    generator = generator or RuleBasedQA()
    internal, problems = internal_examples(data_dir / "internal" / domain)
    raw: list[Example] = []
    facts: list[Fact] = []
    routed = _routed_records(domain, domains[domain], data_dir, until, watchlist_domains or {}, router, since)
    for rec in routed:
        if rec["source"] == "pubchem":
            raw += compound_examples(rec)
            facts += compound_facts(rec)
        else:
            raw += paper_examples(rec, generator)
            facts += paper_facts(rec)
    raw += internal
    raw += feedback_examples(feedback)
    by_key: dict[str, Example] = {}
    for e in raw:
        by_key.setdefault(e.key(), e)
    unique = list(by_key.values())
    # a token covers at most a few dozen characters: longer texts cannot fit and are not tokenized at all
    # (one 50 MB example would otherwise take gigabytes in the tokenizer)
    short = [e for e in unique if len(e.text()) <= max_tokens * 32]
    lengths = {e.key(): count_tokens(e.text()) for e in short}
    fitting = [e for e in short if lengths[e.key()] <= max_tokens]
    eval_list = list(eval_texts)
    banned: set[tuple[str, ...]] = set()
    for t in eval_list:
        banned |= shingles(t, ngram)
    clean = [e for e in fitting if not (shingles(e.text(), ngram) & banned)]
    copied = len(fitting) - len(clean)
    if embed is not None and clean and eval_list:  # overlap in meaning, not only 8-gram copies
        import numpy as np

        sims = np.asarray(embed([e.text() for e in clean]) @ embed(eval_list).T).max(axis=1)
        clean = [e for e, sim in zip(clean, sims, strict=True) if float(sim) < MEANING_OVERLAP]
    if len(clean) < min_examples:
        raise DatasetTooSmall(
            f"{domain}: {len(clean)} usable examples (of {len(raw)} gathered: {len(raw) - len(unique)} duplicates, "
            f"{len(unique) - len(fitting)} too long, {len(fitting) - len(clean)} overlapping the eval set); "
            f"need at least {min_examples}"
        )
    docs = {e.ref for e in clean}
    if len(docs) < 2 * min_validation_docs:
        raise DatasetTooSmall(
            f"{domain}: {len(docs)} documents; the evaluation needs at least {min_validation_docs} held out and as "
            f"many to train on"
        )
    held = held_out_documents(docs, val_percent, min_validation_docs)
    train = [e for e in clean if e.ref not in held]
    val = [e for e in clean if e.ref in held and e.kind not in TEXT_KINDS]
    replay = [
        e
        for e in replay_examples(data_dir, domain, month, round(replay_share * len(train)))
        if e.key() not in by_key and not (shingles(e.text(), ngram) & banned)
    ]
    train += replay
    wanted = round(rehearsal_share * len(train)) if rehearse else 0
    rehearsal = (
        [
            e
            for e in (
                Example("", "", t, "rehearsal", "rehearsal:base", "rehearsal") for t in rehearse(wanted)
            )
            if count_tokens(e.text()) <= max_tokens and not (shingles(e.text(), ngram) & banned)
        ]
        if rehearse and wanted
        else []
    )
    train += list({e.key(): e for e in rehearsal}.values())
    rows = [e.row() for e in train]
    chat = [r for r in rows if "messages" in r]
    text = [r for r in rows if "text" in r]
    trained_docs = {e.ref for e in train if e.source not in ("replay", "rehearsal")}
    pool = month_facts(data_dir, until)
    probe = probe_items(
        [f for f in facts if f.doc in docs],
        pool,
        trained_docs,
        held,
        [json.dumps(r, ensure_ascii=False) for r in chat + text],
        retrieve,
    )
    probe += internal_probe_items(
        (e for e in train if e.source == "internal"),
        pool,
        trained_docs,
        [json.dumps(r, ensure_ascii=False) for r in chat + text],
    )
    probed = {it["doc"] for it in probe if it["kind"] == "closed"}
    if len(probed) < min_probe_documents:
        raise DatasetTooSmall(
            f"{domain}: {len(probed)} trained documents with knowledge-probe items (facts with three "
            f"distractors of their kind); the gate needs at least {min_probe_documents}"
        )
    _, train_sha = write_jsonl(out_dir / "train.jsonl", chat)
    _, text_sha = write_jsonl(out_dir / "train_text.jsonl", text)
    _, val_sha = write_jsonl(
        out_dir / "val.jsonl",
        [{"id": e.key()[:16], "doc": e.ref, "source": e.source, "messages": e.messages()} for e in val],
    )
    _, probe_sha = write_jsonl(out_dir / "probe.jsonl", probe)
    toks = [lengths[e.key()] for e in clean]
    kinds = Counter(e.source if e.source in ("replay", "rehearsal") else e.kind for e in train)
    card: DatasetCard = {
        "domain": domain,
        "month": month,
        # the months whose staged documents it holds: more than one when thinner months were carried forward
        "months": sorted(
            {
                f.day[:7]
                for f in staged_records(
                    data_dir, ["arxiv", "pubchem"], since, until.date() if until else None
                )
            }
        ),
        "carried_from": built_before,  # the last month built before (its documents are replayed, not retaken)
        "format": "chat+text",
        "examples": len(clean),
        "train": len(train),
        "validation": len(val),
        "validation_documents": len({e.ref for e in val}),
        "by_source": dict(sorted(Counter(e.source for e in train + val).items())),
        "by_kind": {k: kinds.get(k, 0) for k in KINDS},
        "teacher": {
            "used": not isinstance(generator, RuleBasedQA),
            "kept": int(getattr(generator, "kept", 0)),
            "dropped": int(getattr(generator, "dropped", 0)),
        },
        "probe": {
            "items": len(probe),
            "closed": sum(1 for it in probe if it["kind"] == "closed"),
            "open": sum(1 for it in probe if it["kind"] == "open"),
            "documents": len({it["doc"] for it in probe}),
            "baselines": probe_baselines(probe),
        },
        "dropped": {
            "duplicates": len(raw) - len(unique),
            "too_long": len(unique) - len(fitting),
            "eval_overlap": copied,
            "eval_meaning_overlap": len(fitting) - copied - len(clean),
            "bad_internal_lines": len(problems),
        },
        "bad_internal_lines": problems,
        "tokens": {
            "max_allowed": max_tokens,
            "mean": round(statistics.fmean(toks), 1),
            "median": statistics.median(toks),
            "max": max(toks),
            "total": sum(toks),
        },
        "sha256": hashlib.sha256((train_sha + text_sha + val_sha + probe_sha).encode()).hexdigest(),
        "files": {
            "train": str(out_dir / "train.jsonl"),
            "train_text": str(out_dir / "train_text.jsonl"),
            "validation": str(out_dir / "val.jsonl"),
            "probe": str(out_dir / "probe.jsonl"),
        },
        "built_at": clock().isoformat(timespec="seconds"),
    }
    write_json(out_dir / "dataset_card.json", card)
    return card
