"""Answer a chat conversation with a local model folder (a domain's merged model, or the base), greedily.

    .venv-train/bin/python -m pipelines.training.steps.generate --model MODEL_DIR --messages MESSAGES.json \
        [--max-new-tokens 256]

``MESSAGES.json`` holds the conversation as a list of ``{"role", "content"}``. It is rendered with the model's
own chat template (what System A's vLLM applies), cut from the front to fit the model's context with room for
the answer, and decoded greedily (deterministic) with a repetition guard (no 6-token run twice, a mild
penalty on repeated tokens), then cut at the first repeated sentence. This is the offline stand-in
for System A used by ``cbnano ask`` when ``CBNANO_SYSTEM_A_URL`` is unset: slow on a CPU, but a real answer.

Prints one JSON line: ``answer``, ``prompt_tokens``, ``new_tokens``, ``truncated`` (prompt tokens dropped),
``device``, ``seconds``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from pipelines.training.steps._common import StepError, answer, pick_device


def without_repeats(text: str) -> str:
    """``text`` up to the first sentence that repeats an earlier one (a small model's greedy decoding loops:
    "The process ... The process ..." until the token limit); the rest is dropped."""
    import re

    kept: list[str] = []
    seen: set[str] = set()
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        key = " ".join(sentence.lower().split())
        if key and key in seen:
            break
        seen.add(key)
        kept.append(sentence)
    return " ".join(kept).strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--messages", required=True, type=Path)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    args = ap.parse_args(argv)
    if not (args.model / "config.json").is_file():
        raise StepError(f"{args.model} is not a model folder (no config.json)")
    messages = json.loads(args.messages.read_text())
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    device = pick_device()
    tok: Any = AutoTokenizer.from_pretrained(str(args.model))
    if not tok.chat_template:
        raise StepError(f"{args.model}'s tokenizer has no chat template")
    model: Any = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32)
    model = model.to(device).eval()
    ids: Any = tok.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"][0]
    window = int(getattr(model.config, "max_position_embeddings", 2048))
    room = max(16, window - args.max_new_tokens)
    dropped = max(0, len(ids) - room)
    ids = ids[dropped:].unsqueeze(0).to(device)
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=args.max_new_tokens,
            do_sample=False,
            # a small model decoded greedily loops ("The process ... The process ..."): no 6-token run twice,
            # and a mild penalty on tokens already said; stops at the end-of-turn token as before
            no_repeat_ngram_size=6,
            repetition_penalty=1.1,
            pad_token_id=tok.pad_token_id or tok.eos_token_id,
        )
    new = out[0, ids.shape[1] :]
    answer(
        {
            "answer": without_repeats(tok.decode(new, skip_special_tokens=True).strip()),
            "prompt_tokens": int(ids.shape[1]),
            "new_tokens": int(new.shape[0]),
            "truncated": dropped,
            "device": device,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
