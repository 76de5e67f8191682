"""Score a causal LM (base, candidate or production, as a merged model folder) on a domain's evaluation.

* **mc_accuracy** — multiple choice by log-likelihood: for each item, the mean log-probability per token of
  each choice as the continuation of ``Question: …\\nAnswer:``; the highest wins. Mean per token, not the
  sum, so that long choices are not penalised for their length.
* **val_loss** — mean token negative log-likelihood of the validation split (alpaca prompt + response).
* **exact_match** — on held-out phrasings of trained facts: greedy generation contains the reference answer.

Eval items (``include/eval/<domain>.jsonl``): ``{"id", "question", "choices": [4 strings], "answer": index}``.

Usage::

    metrics = evaluate(model_dir, load_items(Path("include/eval/catalysis.jsonl")), val_rows)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\n{instruction}\n\n{input_block}### Response:\n")


def load_items(path: Path) -> list[dict[str, Any]]:
    """Eval items from a JSONL file; raises ValueError naming the line of a malformed item."""
    items = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        choices = item.get("choices")
        if not (isinstance(item.get("question"), str) and isinstance(choices, list) and len(choices) >= 2
                and isinstance(item.get("answer"), int) and 0 <= item["answer"] < len(choices)):
            raise ValueError(f"{path}:{n}: an item needs question, >= 2 choices and a valid answer index")
        items.append(item)
    return items


def alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """The alpaca prompt axolotl trains with (without the response)."""
    block = f"### Input:\n{input_text}\n\n" if input_text else ""
    return ALPACA.format(instruction=instruction, input_block=block)


class Scorer:
    """A loaded model and tokenizer with the three scoring methods (CPU or one GPU)."""

    def __init__(self, model_dir: Path | str, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device
        self.tok: Any = AutoTokenizer.from_pretrained(model_dir)
        model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model: Any = model.to(device).eval()

    def continuation_logprob(self, prompt: str, continuation: str) -> tuple[float, int]:
        """(sum of log-probabilities of ``continuation``'s tokens after ``prompt``, their count)."""
        torch = self.torch
        p_ids = self.tok(prompt, add_special_tokens=True).input_ids
        c_ids = self.tok(continuation, add_special_tokens=False).input_ids
        if not c_ids:
            return 0.0, 0
        ids = torch.tensor([p_ids + c_ids], device=self.device)
        with torch.no_grad():
            logprobs = torch.log_softmax(self.model(ids).logits[0, :-1].float(), dim=-1)
        targets = ids[0, 1:]
        picked = logprobs.gather(1, targets[:, None])[:, 0][len(p_ids) - 1:]
        return float(picked.sum()), len(c_ids)

    def mc_accuracy(self, items: Sequence[dict[str, Any]]) -> float:
        """Share of items whose correct choice has the highest mean log-probability per token."""
        correct = 0
        for item in items:
            prompt = f"Question: {item['question']}\nAnswer:"
            scores = []
            for choice in item["choices"]:
                total, n = self.continuation_logprob(prompt, " " + choice)
                scores.append(total / max(n, 1))
            correct += int(max(range(len(scores)), key=scores.__getitem__) == item["answer"])
        return correct / len(items) if items else float("nan")

    def val_loss(self, rows: Sequence[dict[str, str]]) -> float:
        """Mean token NLL of each row's response after its alpaca prompt."""
        total, count = 0.0, 0
        for row in rows:
            lp, n = self.continuation_logprob(alpaca_prompt(row["instruction"], row.get("input", "")), row["output"])
            total, count = total - lp, count + n
        return total / count if count else float("nan")

    def exact_match(self, rows: Sequence[dict[str, str]], max_new_tokens: int = 48) -> float:
        """Share of rows whose greedy answer contains the reference output (case/space-insensitive)."""
        torch = self.torch
        hits = 0
        for row in rows:
            ids = self.tok(alpaca_prompt(row["instruction"], row.get("input", "")), return_tensors="pt").input_ids
            with torch.no_grad():
                out = self.model.generate(ids.to(self.device), max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id)
            answer = str(self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
            hits += int(" ".join(row["output"].lower().split()) in " ".join(answer.lower().split()))
        return hits / len(rows) if rows else float("nan")


def evaluate(model_dir: Path | str, items: Sequence[dict[str, Any]], val_rows: Sequence[dict[str, str]],
             held_out: Sequence[dict[str, str]] = (), device: str = "cpu") -> dict[str, float]:
    """All metrics of one model: ``mc_accuracy``, ``val_loss`` and (given held-out rows) ``exact_match``."""
    scorer = Scorer(model_dir, device)
    metrics = {"mc_accuracy": scorer.mc_accuracy(items), "val_loss": scorer.val_loss(val_rows)}
    if held_out:
        metrics["exact_match"] = scorer.exact_match(held_out)
    return {k: round(v, 6) if not math.isnan(v) else v for k, v in metrics.items()}
