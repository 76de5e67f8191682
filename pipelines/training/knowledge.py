"""What a month's documents say, as facts, and the training rows and probe items made from them.

A **fact** is one checkable statement of a document: a quantity with its unit (``lattice thermal conductivity``
→ ``0.2 W m-1 K-1``), a method the work used (``X-ray diffraction``), or a compound's formula or weight. The
rule-based extractor (:func:`paper_facts`, :func:`compound_facts`) finds them with patterns; it is
deterministic, runs on the CPU and is what tests, the demo and a lab without a teacher use.

From the facts come:

* **fact QA rows** (closed-book: the question names the document by its title, never quotes its abstract),
  each fact asked in :data:`TRAIN_QUESTIONS` phrasings and answered in :data:`TRAIN_ANSWERS` phrasings, since a
  fact seen once is not learned;
* **probe items** (:func:`probe_items`), multiple choice, in phrasings that no training row uses
  (:data:`PROBE_CLOSED`, :data:`PROBE_OPEN`), with distractors of the same kind taken from the month's other
  documents (a conductivity against other conductivities in the same unit), so chance is 1/len(choices) and
  neither the format nor the answers' lengths give the answer away.

A **teacher** (:class:`Teacher`, any OpenAI-compatible chat endpoint: ``CBNANO_TEACHER_URL``) can write the
fact QA rows instead: it is asked for question/answer pairs as JSON, and every pair is checked against its
source (:func:`unsupported`: each number, unit and formula of the answer must occur in the document); pairs
that fail are dropped and counted. Both generators implement :class:`FactQA`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipelines.contracts import ChoiceItem, CompoundRecord, PaperRecord

# Unit tokens a quantity may carry, each optionally with an exponent ("m-1", "cm2"); longest first.
_UNIT_BASES = (
    "mAh|mA|µA|mW|MW|kW|W|kJ|J|kcal|kWh|eV|meV|mmol|mol|mg|kg|g|MPa|GPa|kPa|Pa|bar|ppm|mS|S|mV|µV|V|"
    "°C|K|h|min|ms|s|nm|µm|mm|cm|km|m|Omega|wt%|vol%|%|C|dec|cycles"
)
_UNIT_TOKEN = rf"(?:{_UNIT_BASES})(?:-?\d)?"
_QUANTITY = re.compile(
    rf"(?<![\w.])(-?\d+(?:\.\d+)?)\s?((?:{_UNIT_TOKEN})(?:[\s/](?:{_UNIT_TOKEN})(?![\w-])){{0,3}})(?![\w/-])"
)
# What a bare unit measures, when the sentence names no property before the number.
_UNIT_NAMES = {
    "°C": "temperature",
    "K": "temperature",
    "V": "potential",
    "mV": "overpotential",
    "MPa": "pressure",
    "GPa": "pressure",
    "bar": "pressure",
    "h": "duration",
    "cycles": "cycle life",
    "nm": "size",
    "mA cm-2": "current density",
    "W cm-2": "power density",
    "mW cm-2": "power density",
    "mAh g-1": "specific capacity",
    "J g-1": "latent heat",
    "W m-1 K-1": "thermal conductivity",
    "S cm-1": "conductivity",
    "mS cm-1": "ionic conductivity",
}
_STOP = {
    "a", "an", "the", "with", "and", "while", "of", "at", "to", "give", "gives", "giving", "keep", "keeps",
    "keeping", "show", "shows", "reach", "reaches", "has", "have", "is", "are", "was", "were", "that", "which",
    "by", "for", "in", "on", "from", "as", "its", "their", "deliver", "delivers", "raise", "raises", "lower",
    "lowers", "produce", "produces", "yields", "yield", "than", "up", "above", "below", "over", "under", "we",
    "find", "report", "it", "this", "these", "drive", "drives", "runs", "run", "between", "within", "about",
    "rises", "rise", "falls", "fall", "drops", "drop", "increases", "increase", "decreases", "decrease", "lifts",
    "lift", "shifts", "shift", "climbs", "climb", "grows", "grow", "improves", "improve", "boosts", "boost",
    "cuts", "cut", "reduces", "reduce", "stays", "stay", "remains", "remain", "goes",
}  # fmt: skip
# the property named before a number: "... a conductivity of 12 W", "... raises the selectivity to 57%",
# "... the yield reaches 63%", "... the onset potential shifts to 0.28 V"
_BEFORE_OF = re.compile(
    r"((?:[A-Za-z][\w-]*\s){1,5})(?:of|reaches|reach|near|around|is|to|was|were|(?:stays|remains|stay|remain)\s+at)"
    r"\s*$"
)
_CONDITION = re.compile(r"\b(?:at|after|over|up to)\s*$")
_METHODS = (
    "X-ray diffraction", "X-ray absorption", "X-ray reflectivity", "density functional theory", "DFT",
    "molecular dynamics", "Raman spectroscopy", "infrared spectroscopy", "NMR", "electron microscopy",
    "neutron scattering", "thermoreflectance", "ball milling", "atomic layer deposition",
    "chemical vapour deposition", "isotope labelling", "isotope-exchange experiments", "tomography",
    "gas chromatography", "Boltzmann transport", "machine-learned potential", "coupled-cluster",
    "photodeposition", "carbothermal shock synthesis", "mechanochemistry", "titration",
)  # fmt: skip
_ELEMENTS = set(
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb Sr Y "
    "Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re "
    "Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U".split()
)
_FORMULA = re.compile(r"(?<![\w-])((?:[A-Z][a-z]?(?:\d+(?:\.\d+)?)?){2,})(?![\w-])")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")

TRAIN_QUESTIONS = (
    'What {slot} does the paper "{title}" report?',
    'According to "{title}", what is the {slot}?',
    'In the study "{title}", what value was found for the {slot}?',
    'Which {slot} is reported in "{title}"?',
)
TRAIN_ANSWERS = (
    "{value}.",
    "The {slot} reported is {value}.",
    'The paper "{title}" reports a {slot} of {value}.',
)
METHOD_QUESTIONS = (
    'Which methods were used in "{title}"?',
    'How did the authors of "{title}" study the problem?',
    'Name the techniques behind the paper "{title}".',
)
COMPOUND_QUESTIONS = {
    "formula": (
        "What is the {label} of {name}?",
        "Give the {label} of {name}.",
        "Write {name} as a formula.",
    ),
    "weight": (
        "What is the {label} of {name}?",
        "How heavy is one mole of {name}?",
        "State the {label} of {name}.",
    ),
}
# Probe phrasings: used by no training row (checked when the probe is written).
# Statements of a fact (plain text rows): a fact is learnt from many restatements, not from one QA pattern
STATEMENTS = (
    'In "{title}", the {slot} is {value}.',
    'A {slot} of {value} is reported in the work "{title}".',
    "{title}. Key result: {slot} {value}.",
    'The authors of "{title}" measured a {slot} of {value}.',
)
PROBE_CLOSED = 'Without looking it up: the {slot} given in the work titled "{title}" is which of these?'
# a second held-out phrasing of each closed item: two items per fact halve the probe's phrasing noise
PROBE_CLOSED_2 = 'From memory, pick the {slot} that the study "{title}" arrived at.'
PROBE_OPEN = 'Using the sources, which {slot} does the work titled "{title}" report?'
PROBE_METHOD = 'Without looking it up: which technique did the work titled "{title}" use?'
PROBE_METHOD_OPEN = 'Using the sources, which technique does the work titled "{title}" use?'
PROBE_COMPOUND = "Without looking it up: the {label} of {name} is which of these?"
PROBE_COMPOUND_2 = "From memory, pick the {label} of {name}."


@dataclass(frozen=True)
class Fact:
    """One fact of one document: ``slot`` names what it is (a property, "method", "formula"), ``value``
    the answer as written in the source, ``kind`` the class distractors are drawn from (a unit, "method",
    "formula", "weight")."""

    doc: str  # the document's reference, e.g. "arxiv:2611.08115" or "pubchem:14791"
    title: str  # how questions name the document (a paper's title, a compound's name)
    slot: str
    value: str
    kind: str
    source: str  # "arxiv" or "pubchem"


def _slot_before(prefix: str) -> str | None:
    """The property named just before a number ("... a lattice thermal conductivity of" → that name)."""
    m = _BEFORE_OF.search(prefix)
    if not m:
        return None
    words = m.group(1).split()
    while words and words[0].lower() in _STOP:
        words = words[1:]
    while words and words[-1].lower() in _STOP:  # "the onset potential shifts (to)": the verb is no name
        words = words[:-1]
    # stop at the last stop word inside the phrase: "cells deliver a capacity" -> "capacity"; "of" joins a
    # property to what it is of ("conversion of propane", "Faradaic efficiency of ammonia") and stays
    for i in range(len(words) - 1, -1, -1):
        if words[i].lower() in _STOP and words[i].lower() != "of":
            words = words[i + 1 :]
            break
    slot = " ".join(words).strip(" ,;:")
    return slot.lower() if slot and not any(ch.isdigit() for ch in slot) else None


def _slot_after(rest: str) -> str | None:
    """The noun right after a percentage ("88% capacity", "85% methane conversion")."""
    words = re.findall(r"[A-Za-z][\w-]*", rest[:40])[:2]
    if not words or words[0].lower() in _STOP:
        return None
    if len(words) == 2 and words[1].lower() not in _STOP and words[1].endswith(("ion", "ity", "cy")):
        return " ".join(words).lower()
    return words[0].lower() if words[0].endswith(("ion", "ity", "cy", "ance", "ield")) else None


def quantity_facts(doc: str, title: str, text: str, source: str = "arxiv") -> list[Fact]:
    """Every quantity with a unit whose property the sentence names; a property named twice in one document
    is dropped (a question about it would have two right answers)."""
    found: list[Fact] = []
    for m in _QUANTITY.finditer(text):
        number, unit = m.group(1), m.group(2).strip()
        prefix = text[max(0, m.start() - 80) : m.start()]
        sentence_start = max(prefix.rfind(". "), prefix.rfind("; "))
        prefix = prefix[sentence_start + 1 :] if sentence_start >= 0 else prefix
        # "97% relative density": a percentage names its property after it, more often than before it
        slot = _slot_after(text[m.end() :]) if unit.endswith("%") else None
        slot = slot or _slot_before(prefix)
        # a bare number after "at", "after", "over", "up to" is a condition ("after 1000 cycles"), not a finding
        if slot is None and _CONDITION.search(prefix) is None:
            slot = _UNIT_NAMES.get(unit)
        if not slot or len(slot) < 3:
            continue
        found.append(Fact(doc, title, slot, f"{number} {unit}".replace(" %", "%"), unit, source))
    counts: dict[str, int] = {}
    for f in found:
        counts[f.slot] = counts.get(f.slot, 0) + 1
    return [f for f in found if counts[f.slot] == 1]


def method_facts(doc: str, title: str, text: str, source: str = "arxiv") -> list[Fact]:
    """The methods of :data:`_METHODS` the text names, in the text's order."""
    low = text.lower()
    hits = sorted((low.find(m.lower()), m) for m in _METHODS if m.lower() in low)
    return [Fact(doc, title, "method", m, "method", source) for _, m in hits]


def formulas_in(text: str) -> list[str]:
    """Chemical formulas in ``text`` (every part an element symbol; at least two parts or a count)."""
    out = []
    for m in _FORMULA.finditer(text):
        token = m.group(1)
        parts = re.findall(r"([A-Z][a-z]?)(\d+(?:\.\d+)?)?", token)
        if all(el in _ELEMENTS for el, _ in parts) and (len(parts) >= 2 or any(n for _, n in parts)):
            out.append(token)
    return out


def paper_abstract(rec: PaperRecord) -> tuple[str, str]:
    """(title, abstract) of a staged arXiv record."""
    title = rec["title_clean"]
    text = rec["text"]
    abstract = text[len(title) + 2 :] if text.startswith(title) else text
    return title, abstract.strip()


def paper_facts(rec: PaperRecord) -> list[Fact]:
    """The quantities and methods of a staged arXiv record's abstract."""
    title, abstract = paper_abstract(rec)
    doc = f"arxiv:{rec['doc_id']}"
    return quantity_facts(doc, title, abstract) + method_facts(doc, title, abstract)


# A metal in a formula without carbon marks an extended solid (oxide, salt, alloy): it has an empirical
# formula unit, no molecule and so no molecular SMILES (PubChem's "O=[Ti]=O" for TiO2 is a gas-phase molecule).
_METALS = _ELEMENTS - set("H He B C N O F Ne Si P S Cl Ar Ge As Se Br Kr Sb Te I Xe At Rn".split())


def formula_parts(formula: str) -> list[tuple[str, str]]:
    """(element, count) pairs of a Hill-order formula such as ``O2Ti``."""
    return re.findall(r"([A-Z][a-z]?)(\d*)", formula)


def is_extended_solid(formula: str) -> bool:
    """True for a formula of an inorganic solid: a metal and no carbon (TiO2, Al2O3, CeO2, LiPF6)."""
    els = {el for el, _ in formula_parts(formula)}
    return "C" not in els and bool(els & _METALS)


def conventional_formula(formula: str) -> str:
    """An inorganic formula written metal first (PubChem's Hill order ``O2Ti`` → ``TiO2``); others as given."""
    if not is_extended_solid(formula):
        return formula
    parts = formula_parts(formula)
    metals = [p for p in parts if p[0] in _METALS]
    rest = [p for p in parts if p[0] not in _METALS]
    return "".join(el + n for el, n in metals + rest)


def compound_facts(rec: CompoundRecord) -> list[Fact]:
    """A staged PubChem record's formula (an extended solid's as its empirical formula unit) and weight."""
    name = rec.get("title") or rec.get("iupac_name")
    if not name:
        return []
    doc = f"pubchem:{rec['cid']}"
    out = []
    if rec.get("formula"):
        solid = is_extended_solid(rec["formula"])
        label = "empirical formula" if solid else "molecular formula"
        out.append(Fact(doc, name, label, conventional_formula(rec["formula"]), "formula", "pubchem"))
    weight = rec.get("weight")
    if isinstance(weight, int | float) and weight == weight and weight > 0:  # NaN is not a weight
        label = "formula weight" if rec.get("formula") and is_extended_solid(rec["formula"]) else "molar mass"
        out.append(Fact(doc, name, label, f"{weight:g} g/mol", "weight", "pubchem"))
    return out


@dataclass(frozen=True)
class QA:
    """One closed-book question and answer about a document."""

    question: str
    answer: str
    doc: str
    kind: str  # "fact_qa", "comprehension" or "compound"


def fact_rows(facts: Iterable[Fact]) -> list[QA]:
    """Every fact as several question phrasings, each with one of several answer phrasings (deterministic)."""
    out: list[QA] = []
    methods: dict[str, list[Fact]] = {}
    for f in facts:
        if f.kind == "method":
            methods.setdefault(f.doc, []).append(f)
            continue
        if f.source == "pubchem":
            templates = COMPOUND_QUESTIONS[f.kind]
            answer = f"The {f.slot} of {f.title} is {f.value}."
            out += [QA(q.format(label=f.slot, name=f.title), answer, f.doc, "compound") for q in templates]
            continue
        for i, q in enumerate(TRAIN_QUESTIONS):
            a = TRAIN_ANSWERS[i % len(TRAIN_ANSWERS)]
            fields = {"slot": f.slot, "title": f.title, "value": f.value}
            out.append(QA(q.format(**fields), a.format(**fields), f.doc, "fact_qa"))
    for doc, ms in methods.items():
        names = [m.value for m in ms]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        for i, q in enumerate(METHOD_QUESTIONS):
            answer = (f"They used {listed}.", f"The work relies on {listed}.", f"{listed}.")[i % 3]
            out.append(QA(q.format(title=ms[0].title), answer[0].upper() + answer[1:], doc, "fact_qa"))
    return out


def statement_rows(facts: Iterable[Fact]) -> list[str]:
    """Each quantity fact of a paper restated as plain sentences (:data:`STATEMENTS`), for text rows."""
    return [
        t.format(slot=f.slot, title=f.title, value=f.value)
        for f in facts
        if f.source == "arxiv" and f.kind != "method"
        for t in STATEMENTS
    ]


def reordered(abstract: str) -> str | None:
    """The abstract with its sentences in another order (the first moved to the end), or None for one
    sentence: the same facts in a second context, so they are not learnt as one fixed token sequence."""
    sentences = [s.strip() for s in _SENT.split(abstract) if s.strip()]
    if len(sentences) < 2:
        return None
    return " ".join(sentences[1:] + sentences[:1])


def comprehension_rows(doc: str, title: str, abstract: str) -> list[QA]:
    """Tasks mined from a paper's own text: what it is about (its first sentence, asked by title only), and
    each sentence continued from its first half."""
    sentences = [s.strip() for s in _SENT.split(abstract) if len(s.split()) >= 6]
    if not sentences:
        return []
    out = [QA(f'What is the paper "{title}" about?', sentences[0], doc, "comprehension")]
    for s in sentences:
        words = s.split()
        cut = len(words) // 2
        out.append(
            QA(
                f'Continue this sentence from "{title}": {" ".join(words[:cut])} ...',
                " ".join(words[cut:]),
                doc,
                "comprehension",
            )
        )
    return out


class FactQA(Protocol):
    """Writes fact QA rows for one document."""

    def qa(self, doc: str, title: str, text: str, facts: Sequence[Fact]) -> list[QA]:
        """QA rows about the document (``facts`` are the extractor's, for generators that use them)."""
        ...


class RuleBasedQA:
    """The deterministic generator: the extractor's facts in :data:`TRAIN_QUESTIONS` × :data:`TRAIN_ANSWERS`."""

    kept = 0
    dropped = 0

    def qa(self, doc: str, title: str, text: str, facts: Sequence[Fact]) -> list[QA]:
        """See :func:`fact_rows`."""
        return fact_rows(facts)


def _norm(text: str) -> str:
    return " ".join(text.replace("−", "-").replace("–", "-").split()).lower()


def states(text: str, value: str) -> bool:
    """True when ``text`` states ``value`` (case, dashes and spacing aside)."""
    return _norm(value) in _norm(text)


def quantities_in(text: str) -> list[tuple[str, str]]:
    """(value as a fact writes it, unit) for each number with a unit in ``text``: ``("87 mV", "mV")``."""
    return [
        (f"{m.group(1)} {m.group(2).strip()}".replace(" %", "%"), m.group(2).strip())
        for m in _QUANTITY.finditer(text)
    ]


def unsupported(answer: str, source: str) -> list[str]:
    """The numbers, units with numbers, and formulas of ``answer`` that do not occur in ``source`` (empty:
    faithful). A teacher's item is kept only when this is empty."""
    src = _norm(source)
    src_numbers = set(_NUMBER.findall(src))
    missing = [n for n in _NUMBER.findall(_norm(answer)) if n not in src_numbers]
    missing += [
        f"{m.group(1)} {m.group(2)}"
        for m in _QUANTITY.finditer(answer)
        if _norm(f"{m.group(1)} {m.group(2)}") not in src and _norm(m.group(0)) not in src
    ]
    missing += [f for f in formulas_in(answer) if f.lower() not in src]
    return list(dict.fromkeys(missing))


TEACHER_PROMPT = (
    "You write study questions about one scientific document. Read it and return JSON only: a list of "
    'objects {{"question": ..., "answer": ...}}, {n} of them. Each question asks for one fact of the document '
    "(a measured quantity with its unit, a material or formula, a method, a comparison or a condition), names "
    'the document by its title "{title}", and can be answered without the document in front of you. Ask each '
    "fact in at least three different phrasings, and answer each in a different sentence that restates the fact "
    "in full (the property, its value with the unit, and the document): a fact is learnt from many "
    "restatements. Answers use the document's own numbers and units."
)


class Teacher:
    """Fact QA from a teacher model at an OpenAI-compatible ``/chat/completions`` endpoint, each item checked
    against its source (:func:`unsupported`); counts what it kept and dropped."""

    def __init__(self, url: str, model: str, token: str = "", n: int = 8, timeout_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self._token = token
        self.n = n
        self.timeout_s = timeout_s
        self.kept = 0
        self.dropped = 0
        self.unreadable = 0
        self._where = self.url  # the token travels in a header, never in the URL or the repr

    def __repr__(self) -> str:
        return f"Teacher(url={self._where!r}, model={self.model!r})"

    def _ask(self, title: str, text: str) -> str:
        import httpx

        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        body = {
            "model": self.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": TEACHER_PROMPT.format(n=self.n, title=title)},
                {"role": "user", "content": f"{title}\n\n{text}"},
            ],
        }
        try:
            r = httpx.post(f"{self.url}/chat/completions", json=body, headers=headers, timeout=self.timeout_s)
            r.raise_for_status()
            return str(r.json()["choices"][0]["message"]["content"])
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise TeacherError(f"teacher at {self._where} failed: {exc}") from None

    def qa(self, doc: str, title: str, text: str, facts: Sequence[Fact]) -> list[QA]:
        """The teacher's faithful items for the document; unfaithful or malformed ones are counted, not kept."""
        content = self._ask(title, text)
        start, end = content.find("["), content.rfind("]")
        try:
            items = json.loads(content[start : end + 1]) if start >= 0 and end > start else None
        except ValueError:
            items = None
        if not isinstance(items, list):
            self.unreadable += 1
            return []
        out = []
        for it in items:
            if not (
                isinstance(it, dict)
                and isinstance(it.get("question"), str)
                and isinstance(it.get("answer"), str)
            ):
                self.dropped += 1
                continue
            q, a = it["question"].strip(), it["answer"].strip()
            if not q or not a or unsupported(a, f"{title} {text}") or _norm(text) in _norm(q):
                self.dropped += 1
                continue
            self.kept += 1
            out.append(QA(q, a, doc, "fact_qa"))
        return out


class TeacherError(RuntimeError):
    """The teacher endpoint could not be used; names the URL (without credentials)."""


# Factors that make a plausible wrong value of a measured quantity: within a few-fold of the truth, on both sides
_FACTORS = (0.45, 0.6, 0.7, 0.8, 1.25, 1.4, 1.6, 2.2)


def unit_distractors(fact: Fact, avoid: set[str], n: int) -> list[str]:
    """Up to ``n`` made-up values in the fact's own unit (``87 mV`` → ``61 mV``, ``122 mV`` ...): the true number
    scaled by :data:`_FACTORS`, written with as many decimals as the true one (no rounding cue), preferring
    values of the same length (no length cue); percentages stay within 0-100. Empty for values that are not
    a number with a unit (methods, formulas)."""
    m = re.fullmatch(r"(-?\d+(?:\.(\d+))?)(\s?)(.+)", fact.value)
    if fact.kind in ("method", "formula") or m is None:
        return []
    number, decimals, gap, unit = float(m.group(1)), len(m.group(2) or ""), m.group(3), m.group(4)
    out: dict[str, int] = {}
    for factor in _FACTORS:
        x = round(number * factor, decimals)
        if x == number or (unit.endswith("%") and not 0 < x < 100) or (number > 0 >= x):
            continue
        text = f"{x:.{decimals}f}{gap}{unit}"
        if _norm(text) not in avoid:
            out[text] = abs(len(text) - len(fact.value))
    ranked = sorted(
        out, key=lambda v: (out[v], hashlib.sha256(f"{fact.doc}|{fact.slot}|{v}".encode()).hexdigest())
    )
    return ranked[:n]


def choices_for(fact: Fact, pool: Sequence[Fact], n: int = 4) -> tuple[list[str], int] | None:
    """The fact's value among ``n - 1`` distractors of the same kind from other documents (none that this
    document also states, none equal to the answer), topped up where the month has too few with values made in
    the fact's unit (:func:`unit_distractors`), in a deterministic order; (choices, answer index), or None when
    neither gives enough distractors."""
    own = {_norm(f.value) for f in pool if f.doc == fact.doc and f.kind == fact.kind} | {_norm(fact.value)}
    others = sorted({f.value for f in pool if f.kind == fact.kind and _norm(f.value) not in own})
    ranked = sorted(others, key=lambda v: hashlib.sha256(f"{fact.doc}|{fact.slot}|{v}".encode()).hexdigest())
    choices = ranked[: n - 1]
    if len(choices) < n - 1:
        avoid = own | {_norm(v) for v in choices}
        choices += unit_distractors(fact, avoid, n - 1 - len(choices))
    if len(choices) < n - 1:
        return None
    at = int(hashlib.sha256(f"{fact.doc}|{fact.slot}".encode()).hexdigest()[:8], 16) % n
    choices.insert(at, fact.value)
    return choices, at


def probe_question(fact: Fact, kind: str, variant: int = 0) -> str | None:
    """The probe's phrasing of a fact (``closed`` or ``open``); ``variant`` 1 is the second closed-book
    phrasing (None where a fact has only one: methods, open items)."""
    if variant and (kind != "closed" or fact.kind == "method"):
        return None
    if fact.source == "pubchem":
        return (PROBE_COMPOUND_2 if variant else PROBE_COMPOUND).format(label=fact.slot, name=fact.title)
    if fact.kind == "method":
        return (PROBE_METHOD if kind == "closed" else PROBE_METHOD_OPEN).format(title=fact.title)
    if kind == "closed":
        return (PROBE_CLOSED_2 if variant else PROBE_CLOSED).format(slot=fact.slot, title=fact.title)
    return PROBE_OPEN.format(slot=fact.slot, title=fact.title)


def item_id(fact: Fact, kind: str, variant: int = 0) -> str:
    """A stable probe item id: the document, then a hash of the fact, the kind and the phrasing (the gate pairs
    items per document by the part before ``#``)."""
    key = f"{kind}|{fact.doc}|{fact.slot}|{fact.value}" + (f"|{variant}" if variant else "")
    h = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{fact.doc}#{kind}-{h}"


def doc_of_item(item_id_: str) -> str:
    """The document a probe item asks about (see :func:`item_id`)."""
    return item_id_.split("#", 1)[0]


def probe_baselines(items: Sequence[ChoiceItem]) -> dict[str, float]:
    """Accuracy of answering without a model: ``chance`` (1/len(choices)), ``longest_choice`` and
    ``shortest_choice``. Near chance means the answer's length gives nothing away."""
    if not items:
        return {"chance": 0.0, "longest_choice": 0.0, "shortest_choice": 0.0}

    def share(pick: Any) -> float:
        return round(sum(1 for it in items if pick(it) == it["answer"]) / len(items), 4)

    return {
        "chance": round(sum(1 / len(it["choices"]) for it in items) / len(items), 4),
        "longest_choice": share(
            lambda it: max(range(len(it["choices"])), key=lambda i: len(it["choices"][i]))
        ),
        "shortest_choice": share(
            lambda it: min(range(len(it["choices"])), key=lambda i: len(it["choices"][i]))
        ),
    }
