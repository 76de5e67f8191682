"""Rehearsal rows: the base model's own general text, mixed into a month's training rows.

Fine-tuning a small model on a month of facts at the rate and exposures that teach them (issue 23) also moves
its general language: on seed 1 the 4-epoch candidate's loss on general statements rose by 0.82 nats/token.
The platform has no general corpus to replay (no internet, and a month's first run has no earlier months), so
the base writes one: it continues a fixed list of general openings (``include/rehearsal/prompts.txt``, written
by the team, none a question of the evaluation sets) by sampling, and those texts are trained as plain
completions beside the month's chat rows. Training on what the base itself says pulls the candidate back
towards the base's distribution on general text and teaches it nothing new: the idea of self-synthesized
rehearsal (Huang et al., ACL 2024).

Measured (seed 1, docs/BENCHMARKS.md): at a share of 0.25 it did *not* reduce forgetting on this recipe (the
general-text loss rose by 1.13 nats/token with it, 0.82 without), so ``CBNANO_REHEARSAL_SHARE`` defaults to 0.

The texts depend only on the base's files, the openings, the count and the sampling seed, so they are made once
per base and kept in a cache folder (``<runs>/rehearsal/``); a rebuilt dataset is identical. Generation needs
torch and transformers; it runs in the dataset step's child process, never in the orchestrator.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.assets import asset

Rehearse = Callable[[int], list[str]]  # how many texts → the texts (fewer only when the base writes nothing)

MAX_NEW_TOKENS = 96
BATCH = 16


def openings(path: Path | None = None) -> list[str]:
    """The general openings the base continues (comments and blank lines skipped)."""
    lines = (path or asset("include", "rehearsal", "prompts.txt")).read_text().splitlines()
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


def whole_sentences(text: str) -> str:
    """``text`` up to its last sentence end (a sampled continuation stops mid-sentence at the token limit);
    the whole text when it has none."""
    cut = max(text.rfind(". "), text.rfind(".\n"), text.rfind("!"), text.rfind("?"))
    if text.rstrip().endswith((".", "!", "?")):
        return text.rstrip()
    return text[: cut + 1].rstrip() if cut > 0 else text.rstrip()


def cache_key(base_dir: Path, prompts: list[str], n: int, seed: int, max_new_tokens: int) -> str:
    """What the texts depend on: the base's files (its manifest's checksums, else its config), the
    openings, the count, the seed and the length."""
    meta = base_dir / "cbnano_base.json"
    try:
        files = json.loads(meta.read_text()).get("files") or {}
    except (OSError, ValueError):
        files = {}
    ident = files or {"config.json": (base_dir / "config.json").read_text()}
    blob = json.dumps([ident, prompts, n, seed, max_new_tokens], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def generate(base_dir: Path, prompts: list[str], n: int, seed: int, max_new_tokens: int) -> list[str]:
    """``n`` sampled continuations of ``prompts`` (round robin) by the model in ``base_dir``, each with its
    opening, cut at the last whole sentence; empty continuations are dropped."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok: Any = AutoTokenizer.from_pretrained(str(base_dir))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    model.eval()
    wanted = [prompts[i % len(prompts)] for i in range(n)]
    out: list[str] = []
    with torch.inference_mode():
        for start in range(0, n, BATCH):
            batch = wanted[start : start + BATCH]
            enc = tok(batch, return_tensors="pt", padding=True)
            ids = model.generate(
                **enc,
                do_sample=True,
                temperature=0.8,
                top_p=0.95,
                max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id,
                repetition_penalty=1.1,
            )
            for opening, row in zip(batch, ids[:, enc["input_ids"].shape[1] :], strict=True):
                more = whole_sentences(tok.decode(row, skip_special_tokens=True))
                if more.strip():
                    out.append(f"{opening} {more.strip()}")
    return out


def cached_rehearsal(
    base_dir: Path,
    cache_dir: Path,
    *,
    prompts: list[str] | None = None,
    seed: int = 0,
    max_new_tokens: int = MAX_NEW_TOKENS,
    make: Callable[[Path, list[str], int, int, int], list[str]] = generate,
) -> Rehearse:
    """A :data:`Rehearse` for the base in ``base_dir``: texts come from ``cache_dir`` when made before for the
    same base, openings, count and seed, else ``make`` writes them (kept there, written atomically)."""
    chosen = prompts if prompts is not None else openings()

    def rehearse(n: int) -> list[str]:
        if n <= 0 or not chosen:
            return []
        path = cache_dir / f"{cache_key(base_dir, chosen, n, seed, max_new_tokens)}.jsonl"
        if path.is_file():
            return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
        texts = make(base_dir, chosen, n, seed, max_new_tokens)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
        os.replace(tmp, path)
        return texts

    return rehearse
