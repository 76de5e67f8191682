"""Which domains a paper feeds: its arXiv categories plus what its text is about, not one keyword.

Each domain in ``include/domains.yaml`` has a ``description`` (a few sentences a chemist would write about the
domain's work). A paper's title and abstract are embedded with the platform's MiniLM and compared with every
description (cosine similarity); a paper listed in one of a domain's ``categories`` gets ``category_bonus``
on that domain. The paper goes to the best-scoring domain, and to any other within ``margin`` of it (a
phase-change composite for battery cooling is thermal *and* materials); a paper whose best raw similarity is
below ``min_similarity`` goes nowhere (a machine-learning paper cross-listed in physics). Measured on the
team's labelled set (``include/routing/labelled.jsonl``, ``bench/routing.py``; figures in
``docs/BENCHMARKS.md``).

    router = MeaningRouter.from_settings(settings, load_domains())
    router.route([("Title. Abstract ...", {"cond-mat.mtrl-sci"})])  # -> [["materials"]]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.settings import Settings

Encode = Callable[[list[str]], np.ndarray]  # texts -> unit vectors, one row per text

CATEGORY_BONUS = 0.05
MARGIN = 0.02
MIN_SIMILARITY = 0.15


class MeaningRouter:
    """Routes texts to domains by category and similarity to each domain's description (module docstring)."""

    def __init__(
        self,
        domains: Mapping[str, Mapping[str, Any]],
        encode: Encode,
        category_bonus: float = CATEGORY_BONUS,
        margin: float = MARGIN,
        min_similarity: float = MIN_SIMILARITY,
    ) -> None:
        missing = [d for d, cfg in domains.items() if not str(cfg.get("description") or "").strip()]
        if missing:
            raise ValueError(f"domains without a description in domains.yaml: {', '.join(missing)}")
        self.names = list(domains)
        self.categories = [set(domains[d].get("categories") or ()) for d in self.names]
        self.encode = encode
        self.centroids = encode([str(domains[d]["description"]) for d in self.names])
        self.category_bonus = category_bonus
        self.margin = margin
        self.min_similarity = min_similarity

    @classmethod
    def from_settings(cls, settings: Settings, domains: Mapping[str, Mapping[str, Any]]) -> MeaningRouter:
        """A router with the platform's embedding model (loaded once per process)."""
        from pipelines.embedding.minilm import get_embedder

        embedder = get_embedder(
            settings.embedding_model, settings.embedding_device, settings.embedding_batch_size
        )
        return cls(domains, embedder.encode)

    def scores(self, docs: Sequence[tuple[str, set[str]]]) -> np.ndarray:
        """(documents × domains) similarity of each text to each description, before the category bonus."""
        if not docs:
            return np.zeros((0, len(self.names)), dtype=np.float32)
        return np.asarray(self.encode([t for t, _ in docs]) @ self.centroids.T)

    def route(self, docs: Sequence[tuple[str, set[str]]]) -> list[list[str]]:
        """For each (text, categories): its domains, best first (empty: none fits)."""
        sims = self.scores(docs)
        out: list[list[str]] = []
        for (_, cats), row in zip(docs, sims, strict=True):
            if float(row.max(initial=-1.0)) < self.min_similarity:
                out.append([])
                continue
            total = [
                float(s) + (self.category_bonus if cats & c else 0.0)
                for s, c in zip(row, self.categories, strict=True)
            ]
            best = max(total)
            ranked = sorted(range(len(total)), key=lambda i: -total[i])
            out.append([self.names[i] for i in ranked if total[i] >= best - self.margin])
        return out
