"""``cbnano ask``: answer a question from the corpus with a domain's model, citing numbered sources.

1. retrieve: the platform's search (hybrid where the collection has BM25), ``top_k`` documents;
2. prompt: a system message that asks for an answer from the numbered sources only, with ``[n]`` citations,
   and the sources (title, identifier, the best chunk's text, cut to ``SOURCE_CHARS``) before the question;
3. answer: System A's ``/v1/chat/completions`` with ``model`` = the domain's name (its production adapter,
   see :mod:`pipelines.publishing.serving`), or the served base without ``--domain``. Without
   ``CBNANO_SYSTEM_A_URL`` the answer is generated locally in the training environment, on the CPU, with the
   domain's production merged model (or the base): slow but real, so that the platform works offline.

Returns ``{"answer", "sources": [{"doc_id", "title", "url"}], "model", "answered_by"}``.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import NotRequired, TypedDict

from pipelines.prompt import ask_messages, source_block
from pipelines.retrieval.search import Result, Searcher, parse_query
from pipelines.settings import Settings


class AskError(RuntimeError):
    """The question cannot be answered as asked (no corpus, no model, System A down); one readable line."""


def source_blocks(results: list[Result]) -> list[str]:
    """The numbered source blocks of the prompt for ``results`` (see :mod:`pipelines.prompt`)."""
    return [source_block(n, r.title, r.source, r.doc_id, r.text) for n, r in enumerate(results, 1)]


def build_messages(question: str, results: list[Result], domain: str | None) -> list[dict[str, str]]:
    """The chat conversation: the system instruction, then the numbered sources and the question."""
    return ask_messages(question, source_blocks(results), domain)


def cited(answer: str, n_sources: int) -> list[int]:
    """The source numbers ``answer`` cites as ``[n]`` (``[1, 3]`` and ``[1][3]`` alike), of ``n_sources``."""
    found = {int(n) for group in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", answer) for n in group.split(",")}
    return sorted(n for n in found if 1 <= n <= n_sources)


def _local_model(settings: Settings, domain: str | None) -> tuple[Path, str]:
    """The folder to answer with offline: the domain's production merged model, else the base."""
    from pipelines.publishing.bases import BaseModelMissing, locate_base
    from pipelines.publishing.model_store import ModelStore

    store = ModelStore(settings.model_store)
    if domain and (version := store.production(domain)):
        merged = store.version_dir(domain, version) / "merged"
        if (merged / "config.json").is_file():
            return merged, f"{domain} {version}"
    name, why = settings.base_model, ""
    if not name:  # after `make demo` the one imported base is the obvious choice: take it, and say so
        imported = store.imported_bases()
        if len(imported) != 1:
            where = f"{domain} has no production model and " if domain else ""
            choice = f" (imported: {', '.join(imported)})" if imported else ""
            raise AskError(
                f"{where}CBNANO_BASE_MODEL is not set: no model to answer with{choice} (set "
                "CBNANO_BASE_MODEL, or CBNANO_SYSTEM_A_URL to ask System A)"
            )
        name, why = imported[0], " (CBNANO_BASE_MODEL unset: the only imported base)"
    try:
        base = locate_base(settings, name, "CBNANO_BASE_MODEL")
    except BaseModelMissing as exc:
        raise AskError(str(exc)) from None
    return Path(base.path), f"base {base.name}{why}"


class Source(TypedDict):
    """A source an answer cites: ``[n]`` in the answer is the n-th of the list."""

    doc_id: str
    title: str
    url: str
    snippet: str  # what the passage says about the question (shown when the answer cites no source)


class AskAnswer(TypedDict):
    """What :func:`ask` returns (and ``cbnano ask --json`` prints)."""

    answer: str
    sources: list[Source]
    model: str
    answered_by: str  # "system_a" or "local"
    cited: list[int]  # the sources the answer cites as [n]; [] when it uses none of them
    new_tokens: NotRequired[int]  # local answers: what the training environment's generate step reports
    prompt_tokens: NotRequired[int]
    seconds: NotRequired[float]


def ask(
    settings: Settings, question: str, domain: str | None = None, top_k: int = 5, max_tokens: int = 256
) -> AskAnswer:
    """Retrieve, prompt, answer (System A, or locally without it); see the module docstring."""
    from pipelines.settings import DOMAINS

    if domain is not None and domain not in DOMAINS:
        raise AskError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    with Searcher.from_settings(settings) as searcher:
        results = searcher.search(parse_query(question, top_k=top_k)).results
    messages = build_messages(question, results, domain)
    sources = [Source(doc_id=r.doc_id, title=r.title, url=r.url, snippet=r.snippet) for r in results]
    if settings.system_a_url:
        from pipelines.publishing.serving import SystemAError, client_for

        client = client_for(settings)
        model = domain or Path(settings.base_model).name
        if not model:
            raise AskError("without --domain, ask needs CBNANO_BASE_MODEL: the base's name System A serves")
        try:
            text = client.chat(model, messages, max_tokens=max_tokens)
        except SystemAError as exc:
            if exc.status == 404:
                raise AskError(
                    f"System A at {client.url} does not serve {model!r}: "
                    f"{'no production model has been handed to it' if domain else 'another base'} "
                    f"({exc})"
                ) from None
            raise AskError(str(exc)) from None
        return {
            "answer": text,
            "sources": sources,
            "model": model,
            "answered_by": "system_a",
            "cited": cited(text, len(sources)),
        }
    from pipelines.trainenv import GenerateAnswer, StepError, run_step

    folder, label = _local_model(settings, domain)
    with tempfile.TemporaryDirectory(prefix="cbnano-ask-") as tmp:
        path = Path(tmp) / "messages.json"
        path.write_text(json.dumps(messages))
        try:
            out: GenerateAnswer = run_step(
                settings.train_python,
                "generate",
                ["--model", str(folder), "--messages", str(path), "--max-new-tokens", str(max_tokens)],
                timeout_s=1800,
            )
        except (StepError, FileNotFoundError) as exc:
            raise AskError(f"local answer with {label} failed: {exc}") from None
    return {
        "answer": out["answer"],
        "sources": sources,
        "model": label,
        "answered_by": "local",
        "cited": cited(out["answer"], len(sources)),
        "new_tokens": out["new_tokens"],
        "prompt_tokens": out["prompt_tokens"],
        "seconds": out["seconds"],
    }
