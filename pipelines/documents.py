"""Documents and chunks: text normalisation, token-window chunking, stable ids and content hashes.

A :class:`Document` is what the vector store indexes for one source record (an arXiv paper, a PubChem
compound). Its ``text`` is what gets embedded; the raw text stays in the data lake's staged records.

Chunking guarantees that nothing is silently cut off by the embedding model's window: a text of more than
``max_tokens`` word pieces becomes several overlapping chunks, each a substring of the text that fits the
window; a short abstract stays one chunk. Chunk ids are ``<source>:<doc_id>#<n>`` and therefore stable.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# A tokenizer callable: text -> list of (start, end) character offsets, one per word piece.
OffsetTokenizer = Callable[[str], list[tuple[int, int]]]

CHUNK_MAX_TOKENS = 250  # all-MiniLM-L6-v2 reads 256 pieces, 2 of them [CLS]/[SEP]; a small margin on top
CHUNK_OVERLAP_TOKENS = 48


@dataclass(frozen=True)
class Document:
    """One record to index. ``content_hash`` covers everything that ends up in the vector store."""

    source: str
    doc_id: str
    title: str
    text: str
    url: str = ""
    published: str = ""
    categories: Sequence[str] = ()
    version: int = 1

    def content_hash(self, embedding_model: str) -> str:
        """sha256 of the indexed fields, the embedding model and the chunking parameters."""
        payload = json.dumps(
            [
                self.source,
                self.doc_id,
                self.title,
                self.text,
                self.url,
                self.published,
                list(self.categories),
                self.version,
                embedding_model,
                CHUNK_MAX_TOKENS,
                CHUNK_OVERLAP_TOKENS,
            ],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Chunk:
    """A piece of a document's text that fits the embedding window."""

    chunk_id: str
    doc_id: str
    index: int
    text: str
    tokens: int = 0  # word pieces in ``text`` (as counted by the chunking tokenizer)


_LATEX_WRAPPERS = re.compile(
    r"\\(?:mathrm|mathbf|mathit|textrm|textbf|textit|emph|text|mathcal|rm|bf|it)\s*\{([^{}]*)\}"
)
_LATEX_DROP = re.compile(r"\\(?:cite|ref|label|eqref)\s*\{[^{}]*\}")
_LATEX_SUBSUP = re.compile(r"([_^])\{([^{}]*)\}")
_LATEX_SIMPLE_SUBSUP = re.compile(r"[_^](\w)")
_LATEX_COMMAND = re.compile(r"\\([A-Za-z]+)(\s*)(?=([A-Za-z\\])?)")
_LATEX_SYMBOLS = {
    r"^{\circ}": "°",
    r"^\circ": "°",
    r"\circ": "°",
    r"\pm": "±",
    r"\times": "×",
    r"\mu": "μ",
    r"\AA": "Å",
    r"\sim": "~",
    r"\approx": "≈",
    r"\leq": "≤",
    r"\geq": "≥",
}
_LATEX_ESCAPES = {
    r"\%": "%",
    r"\&": "&",
    r"\_": "_",
    r"\#": "#",
    r"\$": "$",
    "~": " ",
    r"\,": " ",
    r"\;": " ",
    r"\!": "",
    r"\(": "",
    r"\)": "",
    r"\[": "",
    r"\]": "",
}
_WS = re.compile(r"\s+")


def normalize_text(raw: str, *, latex: bool = True) -> str:
    """Readable, embeddable text: HTML entities decoded, light LaTeX cleanup, whitespace collapsed.

    The LaTeX cleanup keeps the content of markup (``LiFePO$_4$`` → ``LiFePO4``, ``\\mathrm{TiO}_2`` →
    ``TiO2``, ``\\alpha`` → ``alpha``) and drops citations; it is for embedding, not for display.
    """
    text = html.unescape(raw)
    if latex:
        text = _LATEX_DROP.sub("", text)
        for _ in range(3):  # nested wrappers such as \mathrm{\textbf{x}}
            text = _LATEX_WRAPPERS.sub(r"\1", text)
        for k, v in _LATEX_SYMBOLS.items():
            text = text.replace(k, v)
        for k, v in _LATEX_ESCAPES.items():
            text = text.replace(k, v)
        text = _LATEX_SUBSUP.sub(r"\2", text)
        text = _LATEX_SIMPLE_SUBSUP.sub(r"\1", text)
        # \alpha -> alpha; a space only where the next thing is a word, so \hbar\partial stays two words
        text = _LATEX_COMMAND.sub(lambda m: m.group(1) + (" " if m.group(2) or m.group(3) else ""), text)
        text = text.replace("$", "").replace("{", "").replace("}", "")
    return _WS.sub(" ", text).strip()


def chunk_text(
    text: str,
    doc_id: str,
    source: str,
    tokenize: OffsetTokenizer,
    max_tokens: int = CHUNK_MAX_TOKENS,
    overlap: int = CHUNK_OVERLAP_TOKENS,
) -> list[Chunk]:
    """Split ``text`` into windows of at most ``max_tokens`` pieces overlapping by ``overlap`` pieces.

    Returns one chunk (the whole text) when it fits; chunk boundaries fall on token boundaries and each
    chunk is the exact substring of ``text`` its tokens cover.
    """
    if overlap >= max_tokens:
        raise ValueError("overlap must be smaller than max_tokens")
    offsets = tokenize(text)
    if len(offsets) <= max_tokens:
        return [
            Chunk(
                chunk_id=chunk_id(source, doc_id, 0), doc_id=doc_id, index=0, text=text, tokens=len(offsets)
            )
        ]
    chunks: list[Chunk] = []
    step = max_tokens - overlap
    start = 0
    while True:
        end = min(start + max_tokens, len(offsets))
        piece = text[offsets[start][0] : offsets[end - 1][1]]
        chunks.append(
            Chunk(
                chunk_id=chunk_id(source, doc_id, len(chunks)),
                doc_id=doc_id,
                index=len(chunks),
                text=piece,
                tokens=end - start,
            )
        )
        if end == len(offsets):
            return chunks
        start += step


def chunk_id(source: str, doc_id: str, index: int) -> str:
    """The stable primary key of chunk ``index`` of a document."""
    return f"{source}:{doc_id}#{index}"


def dedupe_documents(docs: Sequence[Document]) -> list[Document]:
    """One document per (source, doc_id), keeping the highest version (the later one on ties)."""
    best: dict[tuple[str, str], Document] = {}
    for doc in docs:
        key = (doc.source, doc.doc_id)
        if key not in best or doc.version >= best[key].version:
            best[key] = doc
    return list(best.values())


def published_day(published: str) -> int:
    """``YYYYMMDD`` of an ISO date or timestamp (``2024-05-01T…``), 0 when there is none."""
    digits = published[:10].replace("-", "")
    return int(digits) if len(digits) == 8 and digits.isdigit() else 0
