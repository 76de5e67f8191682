"""The prompt ``cbnano ask`` sends, as one leaf module: numbered sources, then the question.

Shared by :mod:`pipelines.retrieval.ask` (what System A is asked), the dataset step (the knowledge probe's
``open`` items store the source blocks exactly as this prompt shows them) and the scorer in the training
environment (which rebuilds the same conversation), so the served mode and the measured mode are one text.
Imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Sequence

SOURCE_CHARS = 600
SYSTEM_PROMPT = (
    "You are the CB Nano lab's {domain} assistant. Answer the question using only the numbered "
    "sources below, and cite the sources you use as [1], [2], ... If the sources do not answer the "
    "question, say so."
)


def source_block(n: int, title: str, source: str, doc_id: str, text: str) -> str:
    """Source ``n`` as the prompt shows it: ``[n] title (source:doc_id)`` and its text, cut at a word."""
    if len(text) > SOURCE_CHARS:
        text = text[:SOURCE_CHARS].rsplit(" ", 1)[0] + " …"
    return f"[{n}] {title} ({source}:{doc_id})\n{text}"


def ask_messages(question: str, blocks: Sequence[str], domain: str | None) -> list[dict[str, str]]:
    """The chat conversation: the system instruction, then the numbered source blocks and the question."""
    sources = "\n\n".join(blocks) if blocks else "(no sources found)"
    return [
        {"role": "system", "content": SYSTEM_PROMPT.format(domain=domain or "materials and chemistry")},
        {"role": "user", "content": f"Sources:\n\n{sources}\n\nQuestion: {question}"},
    ]
