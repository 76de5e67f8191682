"""Monthly instruction datasets per domain, built from what the platform ingested.

``build_dataset`` gathers, for one domain and month:

* **compounds** (PubChem records in the lake): several phrasings of each fact — formula, molecular weight,
  IUPAC name, SMILES, description;
* **papers** (arXiv records in the lake): a title from its abstract, a one-sentence summary (the abstract's
  opening sentence, which in these fields states what was done), and the key finding (the sentence that
  reports a result: "we find/show/observe…", or the one with most numbers);
* **the lab's own drops**: ``CBNANO_DATA_DIR/internal/<domain>/*.jsonl`` lines with ``instruction``,
  optional ``input`` and ``output``; a bad line is reported with its file and line number and skipped.

Then: exact duplicates removed; examples longer than ``max_tokens`` (counted with the base model's tokenizer,
passed in as ``count_tokens``) dropped; examples sharing any ``ngram``-word shingle with the evaluation sets
dropped (decontamination); a deterministic train/validation split by the hash of each example's **document**
(an arXiv paper, a PubChem compound, a lab-drop line or the drop's ``doc`` key), so every phrasing of a held-out
document is held out: the validation split is documents training never saw, in this month or any other.

Rows are chat conversations, ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``, trained
and evaluated through the base model's own chat template (axolotl's ``chat_template`` dataset type), the
format System A's vLLM server applies. Validation rows also carry ``id`` (the example's content hash) and
``doc``. Writes ``train.jsonl``, ``val.jsonl`` and ``dataset_card.json`` (counts by source, token statistics,
sha256) and returns the card. Fewer than ``min_examples`` → :class:`DatasetTooSmall`, and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.assets import asset
from pipelines.contracts import DatasetCard
from pipelines.lake import staged_records, write_json, write_jsonl
from pipelines.windows import month_end

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
_FINDING = re.compile(
    r"\b(we (?:find|show|observe|demonstrate|report|predict)|reach(?:es)?|achiev\w+|retain\w*|"
    r"keep\w*|results? (?:show|indicate))\b",
    re.I,
)


class DatasetTooSmall(ValueError):
    """Not enough examples to train on; the message gives the counts."""


@dataclass(frozen=True)
class Example:
    """One alpaca-format instruction example and where it came from."""

    instruction: str
    input: str
    output: str
    source: str  # "pubchem", "arxiv" or "internal"
    ref: str  # the document it came from (CID, arXiv id, file:line)

    def key(self) -> str:
        """Content hash: identical examples share it; the split is decided by it."""
        norm = "\x1f".join(" ".join(x.lower().split()) for x in (self.instruction, self.input, self.output))
        return hashlib.sha256(norm.encode()).hexdigest()

    def text(self) -> str:
        """All of the example's text (for length and overlap checks)."""
        return f"{self.instruction}\n{self.input}\n{self.output}"

    def messages(self) -> list[dict[str, str]]:
        """The example as a chat: the instruction (and its input) from the user, the output as the answer."""
        user = f"{self.instruction}\n\n{self.input}" if self.input else self.instruction
        return [{"role": "user", "content": user}, {"role": "assistant", "content": self.output}]


def domains_file() -> Path:
    """``include/domains.yaml``: which papers and compounds feed each domain's dataset."""
    return asset("include", "domains.yaml")


def load_domains(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The routing config (default :func:`domains_file`): {domain: {categories, keywords, watchlist_domains}}."""
    import yaml

    config = yaml.safe_load((path or domains_file()).read_text())
    return {
        name: {
            "categories": set(d.get("categories") or []),
            "keywords": list(d.get("keywords") or []),
            "watchlist_domains": set(d.get("watchlist_domains") or []),
        }
        for name, d in config["domains"].items()
    }


def _has_keyword(text: str, keywords: Iterable[str]) -> bool:
    low = text.lower()
    return any(re.search(r"(?<![\w-])" + re.escape(k.lower()) + r"(?![\w-])", low) for k in keywords)


def latest_records(data_dir: Path, source: str, until: datetime | None = None) -> list[dict[str, Any]]:
    """The newest staged record of each document of ``source`` (staged on or before ``until``)."""
    best: dict[str, tuple[str, dict[str, Any]]] = {}
    for f in staged_records(data_dir, [source], last_day=until.date() if until else None):
        for rec in f.records():
            key = (f.day, str(rec.get("version", 0)).zfill(4))
            stamp = "|".join(key)
            if rec["doc_id"] not in best or stamp >= best[rec["doc_id"]][0]:
                best[rec["doc_id"]] = (stamp, rec)
    return [rec for _, rec in best.values()]


def paper_examples(rec: dict[str, Any]) -> list[Example]:
    """Title, summary and key-finding examples from a staged arXiv record."""
    title = rec["title_clean"]
    abstract = rec["text"][len(title) + 2 :] if rec["text"].startswith(title) else rec["text"]
    sentences = [s.strip() for s in _SENT.split(abstract) if len(s.split()) >= 5]
    if not sentences:
        return []
    ref = f"arxiv:{rec['doc_id']}"
    out = [Example("Suggest a title for the paper with this abstract.", abstract, title, "arxiv", ref)]
    if len(sentences) >= 2:
        out.append(Example("Summarize this abstract in one sentence.", abstract, sentences[0], "arxiv", ref))
        findings = [s for s in sentences[1:] if _FINDING.search(s)]
        finding = findings[0] if findings else max(sentences[1:], key=lambda s: len(re.findall(r"\d", s)))
        out.append(Example(f'What is the key finding of the paper "{title}"?', "", finding, "arxiv", ref))
    return out


def compound_examples(rec: dict[str, Any]) -> list[Example]:
    """Several phrasings of each fact in a staged PubChem record."""
    name = rec.get("title") or rec.get("iupac_name")
    if not name:
        return []
    ref = f"pubchem:{rec['cid']}"
    out: list[Example] = []

    def add(questions: list[str], answer: str) -> None:
        out.extend(Example(q, "", answer, "pubchem", ref) for q in questions)

    if rec.get("formula"):
        add(
            [f"What is the molecular formula of {name}?", f"Give the chemical formula of {name}."],
            f"The molecular formula of {name} is {rec['formula']}.",
        )
    if rec.get("weight") is not None:
        add(
            [f"What is the molecular weight of {name}?", f"How heavy is one mole of {name}?"],
            f"{name} has a molecular weight of {rec['weight']:g} g/mol.",
        )
    if rec.get("iupac_name"):
        add([f"What is the IUPAC name of {name}?"], f"The IUPAC name of {name} is {rec['iupac_name']}.")
    if rec.get("smiles"):
        add(
            [f"Write the SMILES string of {name}.", f"What is the SMILES notation for {name}?"], rec["smiles"]
        )
    for text, _source, _url in rec.get("descriptions", []):
        add([f"Describe {name}.", f"What is {name} used for?"], text)
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
        # JSONL lines end at "\n" only: U+2028 or NEL inside a JSON string is text, not a line break; a UTF-8
        # byte-order mark at the start of the file is not part of line 1
        for n, line in enumerate(f.read_text(encoding="utf-8-sig").split("\n"), 1):
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
            examples.append(
                Example(
                    obj["instruction"].strip(),
                    obj.get("input", "").strip(),
                    obj["output"].strip(),
                    "internal",
                    ref,
                )
            )
    return examples, problems


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


def _iter_domain_examples(
    domain: str,
    cfg: dict[str, Any],
    data_dir: Path,
    until: datetime | None,
    watchlist_domains: dict[str, str],
) -> Iterator[Example]:
    for rec in latest_records(data_dir, "arxiv", until):
        if set(rec.get("categories", [])) & cfg["categories"] or _has_keyword(rec["text"], cfg["keywords"]):
            yield from paper_examples(rec)
    for rec in latest_records(data_dir, "pubchem", until):
        names = [rec.get("title", "")] + list(rec.get("synonyms", []))
        in_watch = any(watchlist_domains.get(n.lower()) in cfg["watchlist_domains"] for n in names if n)
        if in_watch or _has_keyword(rec.get("text", ""), cfg["keywords"]):
            yield from compound_examples(rec)


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
    min_validation_docs: int = 5,
    ngram: int = 8,
    watchlist_domains: dict[str, str] | None = None,
    domains: dict[str, dict[str, Any]] | None = None,
) -> DatasetCard:
    """Build and write one domain's dataset (see module docstring); returns the dataset card."""
    domains = domains or load_domains()
    if domain not in domains:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(sorted(domains))}")
    until = month_end(month) if month else None
    internal, problems = internal_examples(data_dir / "internal" / domain)
    raw = (
        list(_iter_domain_examples(domain, domains[domain], data_dir, until, watchlist_domains or {}))
        + internal
    )
    by_key: dict[str, Example] = {}
    for e in raw:
        by_key.setdefault(e.key(), e)
    unique = list(by_key.values())
    # a token covers at most a few dozen characters: longer texts cannot fit and are not tokenized at all
    # (one 50 MB example would otherwise take gigabytes in the tokenizer)
    short = [e for e in unique if len(e.text()) <= max_tokens * 32]
    lengths = {e.key(): count_tokens(e.text()) for e in short}
    fitting = [e for e in short if lengths[e.key()] <= max_tokens]
    banned: set[tuple[str, ...]] = set()
    for t in eval_texts:
        banned |= shingles(t, ngram)
    clean = [e for e in fitting if not (shingles(e.text(), ngram) & banned)]
    if len(clean) < min_examples:
        raise DatasetTooSmall(
            f"{domain}: {len(clean)} usable examples (of {len(raw)} gathered: {len(raw) - len(unique)} duplicates, "
            f"{len(unique) - len(fitting)} too long, {len(fitting) - len(clean)} overlapping the eval set); "
            f"need at least {min_examples}"
        )
    docs = {e.ref for e in clean}
    if len(docs) < 2 * min_validation_docs:
        raise DatasetTooSmall(
            f"{domain}: {len(docs)} documents; the gate needs at least {min_validation_docs} held out and as many "
            f"to train on"
        )
    held = held_out_documents(docs, val_percent, min_validation_docs)
    train = [e for e in clean if e.ref not in held]
    val = [e for e in clean if e.ref in held]

    _, train_sha = write_jsonl(out_dir / "train.jsonl", [{"messages": e.messages()} for e in train])
    _, val_sha = write_jsonl(
        out_dir / "val.jsonl",
        [{"id": e.key()[:16], "doc": e.ref, "source": e.source, "messages": e.messages()} for e in val],
    )
    toks = [lengths[e.key()] for e in clean]
    card: DatasetCard = {
        "domain": domain,
        "month": month,
        "format": "chat",
        "examples": len(clean),
        "train": len(train),
        "validation": len(val),
        "validation_documents": len({e.ref for e in val}),
        "by_source": dict(sorted(Counter(e.source for e in clean).items())),
        "dropped": {
            "duplicates": len(raw) - len(unique),
            "too_long": len(unique) - len(fitting),
            "eval_overlap": len(fitting) - len(clean),
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
        "sha256": hashlib.sha256((train_sha + val_sha).encode()).hexdigest(),
        "files": {"train": str(out_dir / "train.jsonl"), "validation": str(out_dir / "val.jsonl")},
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(out_dir / "dataset_card.json", card)
    return card
