"""The dataset step in a process of its own: what needs the embedding model stays out of the orchestrator.

A month's dataset routes papers by meaning and retrieves the passages of the probe's open items, both with
MiniLM (torch). The process that orchestrates a run (an Airflow task, the CLI) never imports torch, so
:func:`build_in_child` runs :func:`pipelines.training.datasets.build_dataset` here, as a child with the same
interpreter and environment (settings included)::

    .venv/bin/python -m pipelines.training.dataset_step --spec var/data/datasets/catalysis/2026-11.spec.json

The spec: ``domain``, ``month``, ``tokenizer`` (the base's ``tokenizer.json``), ``eval_texts``, ``max_tokens``,
``watchlist_domains``, ``base`` (the base's folder) and ``rehearsal_share`` (of its own text, written here). The last stdout line is the card as JSON, or ``{"not_trained": reason}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from pipelines.contracts import DatasetCard, RatedAnswer
from pipelines.lake import write_json
from pipelines.settings import Settings
from pipelines.training.datasets import DatasetTooSmall, Retrieve, build_dataset
from pipelines.training.knowledge import FactQA, Teacher
from pipelines.training.rehearsal import cached_rehearsal
from pipelines.training.routing import MeaningRouter


def token_counter(tokenizer_json: Path) -> Callable[[str], int]:
    """Count tokens with the base model's tokenizer (the ``tokenizers`` library: no torch needed)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    return lambda text: len(tok.encode(text).ids)


@contextmanager
def corpus_retriever(settings: Settings, top_k: int = 3) -> Iterator[Retrieve | None]:
    """A question → the source blocks ``cbnano ask`` would show for it (the platform's search over the corpus),
    for the probe's open items; None when there is no corpus to search (nothing indexed yet, or no embedding
    model in this environment)."""
    if settings.milvus_is_lite and not Path(settings.milvus_uri).is_file():
        yield None
        return
    try:
        from pipelines.retrieval.ask import source_blocks
        from pipelines.retrieval.search import Searcher, SearchError, parse_query

        searcher = Searcher.from_settings(settings)
    except (ImportError, SearchError):
        yield None
        return
    with searcher:
        yield lambda q: source_blocks(searcher.search(parse_query(q[:500], top_k=top_k)).results)


def paper_router(settings: Settings) -> MeaningRouter | None:
    """Routing by meaning with the platform's MiniLM; None (categories and keywords) where this environment
    has no embedding model installed."""
    from pipelines.training.datasets import load_domains

    try:
        return MeaningRouter.from_settings(settings, load_domains())
    except ImportError:
        return None


def fact_generator(settings: Settings) -> FactQA | None:
    """The teacher when ``CBNANO_TEACHER_URL`` is set (with ``CBNANO_TEACHER_MODEL``), else None: the
    rule-based extractor."""
    if not settings.teacher_url:
        return None
    if not settings.teacher_model:
        raise ValueError(
            "CBNANO_TEACHER_URL is set but CBNANO_TEACHER_MODEL is not: name the teacher's model"
        )
    return Teacher(settings.teacher_url, settings.teacher_model, settings.teacher_token)


class DatasetSpec(TypedDict):
    """What the child builds: one domain's month, tokenized with the base's tokenizer."""

    domain: str
    month: str
    tokenizer: str  # the base's tokenizer.json
    eval_texts: list[str]  # the evaluation items' text, kept out of the training rows
    max_tokens: int
    watchlist_domains: dict[str, str]  # compound name (lower-case) → its domain
    base: NotRequired[str]  # the base's folder: it writes the rehearsal rows
    rehearsal_share: NotRequired[float]  # 0 or absent: none (test profiles)


def build_month(settings: Settings, spec: DatasetSpec) -> DatasetCard:
    """Build the month's dataset the spec describes (see module docstring); returns the card."""
    domain, month = spec["domain"], spec["month"]
    base = spec.get("base") if spec.get("rehearsal_share") else None
    router = paper_router(settings)
    with corpus_retriever(settings) as retrieve:
        return build_dataset(
            domain,
            settings.data_dir,
            settings.data_dir / "datasets" / domain / month,
            token_counter(Path(spec["tokenizer"])),
            spec["eval_texts"],
            month=month,
            max_tokens=int(spec["max_tokens"]),
            watchlist_domains=spec["watchlist_domains"],
            generator=fact_generator(settings),
            replay_share=settings.replay_share,
            retrieve=retrieve,
            router=router.route if router else None,
            embed=router.encode if router else None,
            feedback=rated_answers(settings, domain, month) if settings.feedback_rows else (),
            rehearse=cached_rehearsal(Path(base), settings.runs_dir / "rehearsal") if base else None,
            rehearsal_share=float(spec.get("rehearsal_share", 0.0)),
        )


def rated_answers(settings: Settings, domain: str, month: str) -> list[RatedAnswer]:
    """The domain's ``+rag`` answers rated +1 in the gateway during ``month`` (``CBNANO_FEEDBACK_ROWS=1``)."""
    from pipelines.ops.traces import GatewayStore

    return [
        r
        for r in GatewayStore.from_settings(settings).rated(domain, 1)
        if str(r.get("at", "")).startswith(month)
    ]


def build_in_child(settings: Settings, spec: DatasetSpec, timeout_s: float = 6 * 3600) -> DatasetCard:
    """Run :func:`build_month` in a child process (same interpreter, same environment); returns the card.
    Raises DatasetTooSmall with the child's reason, RuntimeError when the child fails."""
    path = settings.data_dir / "datasets" / spec["domain"] / f"{spec['month']}.spec.json"
    write_json(path, spec)
    cmd = [sys.executable, "-m", "pipelines.training.dataset_step", "--spec", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"dataset step for {spec['domain']} ran over {timeout_s:.0f}s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"dataset step failed (exit {proc.returncode}): {' | '.join(tail)}")
    out = json.loads(lines[-1])
    if "not_trained" in out:
        raise DatasetTooSmall(out["not_trained"])
    if "error" in out:
        raise ValueError(out["error"])
    card: DatasetCard = out
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, required=True)
    args = ap.parse_args(argv)
    from pipelines.settings import get_settings

    try:
        card: Any = build_month(get_settings(), json.loads(args.spec.read_text()))
    except DatasetTooSmall as exc:
        card = {"not_trained": str(exc)}
    except ValueError as exc:
        card = {"error": str(exc)}
    print(json.dumps(card), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
