"""Keyword terms for full-text (BM25) search: chemistry identifiers survive whole.

Milvus's built-in analyzers split ``MOF-808`` at the hyphen, ``LiNi0.8Mn0.1Co0.1O2`` at the dots and CAS
numbers into their digit groups, which is exactly what a chemist's query must not lose. So the platform
analyses text itself and hands Milvus a space-separated list of terms (the field's analyzer is then only a
whitespace split). The same function runs on documents at indexing time and on queries, so both sides agree.

A term is a run of letters and digits, joined across ``- . + / , : ( ) [ ] '`` when a letter or digit follows
(``Li(Ni0.8Mn0.1Co0.1)O2``, ``7440-06-4``, ``mS/cm``), lowercased after Unicode NFKC (``Li₆PS₅Cl`` →
``li6ps5cl``). A joined term also contributes its parts of two or more characters (``mof-808`` → ``mof``,
``808``; decimal points do not split), so ``MOF 808`` still meets ``MOF-808``; a versioned arXiv id also
contributes the id without its version. Common English function words are dropped.

Usage::

    keyword_terms("Li6PS5Cl argyrodites reach 10 mS/cm.")   # ['li6ps5cl', 'argyrodites', 'reach', '10', ...]
    keyword_text(title, chunk)                              # the string stored in the ``keywords`` field
"""

from __future__ import annotations

import re
import unicodedata

_WORD = r"[^\W_]"  # a letter or digit in any script
_TERM = re.compile(rf"{_WORD}+(?:[\-.+/,:()\[\]']{_WORD}+)*")
# where a joined term splits into parts: any joiner but a decimal point (``0.8`` stays whole)
_JOINERS = re.compile(r"[\-+/,:()\[\]']+|\.(?![0-9])|(?<![0-9])\.")
_ARXIV_VERSIONED = re.compile(r"^([0-9]{4}\.[0-9]{4,5})v[0-9]+\Z")
STOPWORDS = frozenset(
    "a an and are as at be been but by can for from has have in into is it its of on or our that the their "
    "these this those to was we were which with".split()
)


def keyword_terms(text: str) -> list[str]:
    """The terms of ``text`` in order (repeats kept: BM25 counts them), joined terms followed by their parts."""
    out: list[str] = []
    for match in _TERM.finditer(unicodedata.normalize("NFKC", text).lower()):
        term = match.group(0)
        parts = [p for p in _JOINERS.split(term) if p]
        if len(parts) > 1:
            out.append(term)
            parts = [p for p in parts if len(p) >= 2 and p not in STOPWORDS]
        elif term in STOPWORDS:
            continue
        for part in parts:
            out.append(part)
            if versioned := _ARXIV_VERSIONED.match(part):  # 2405.01234v2 also answers 2405.01234
                out.append(versioned.group(1))
    return out


def keyword_text(*texts: str, limit_bytes: int | None = None) -> str:
    """The space-joined terms of ``texts``, cut at a term boundary to fit ``limit_bytes`` UTF-8 bytes."""
    joined = " ".join(t for text in texts for t in keyword_terms(text))
    if limit_bytes is None or len(joined.encode("utf-8")) <= limit_bytes:
        return joined
    cut = joined.encode("utf-8")[: limit_bytes + 1].decode("utf-8", errors="ignore")
    return cut[: cut.rfind(" ")] if " " in cut else ""
