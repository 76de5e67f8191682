"""Score models on a domain's evaluation, per item, through the base model's chat template.

Runs in the training environment (torch, transformers, peft). Every model is scored exactly as System A
serves it: the base model with the domain's LoRA adapter on top, prompts formatted by the base tokenizer's
chat template (what vLLM's OpenAI-compatible server applies). Each item gets one score per model, so the gate
can compare models item by item (``pipelines.evaluation.gate``):

* **heldout_loss** — for each held-out document (the training split never saw it): mean negative
  log-likelihood per token of the assistant's answers to the document's examples, end-of-turn token
  included, after the chat-formatted user turn. Lower is better.
* **mc_accuracy** — for each multiple-choice item of ``include/eval/*.jsonl`` (every domain's, the forgetting
  guard): 1 if the right choice
  has the highest mean log-probability per token as the assistant's answer to the question, else 0. Mean per
  token, not the sum, so long choices are not penalised for their length.
* **mc_prob** — the same item's probability of the right choice, the choices' mean per-token log-probabilities
  normalised with a softmax: it moves before the argmax flips, so it shows forgetting with less noise.

* **general_loss** — for each general passage (the statements of every domain's multiple-choice set: question
  and right answer, ``pipelines.evaluation.evaluate.general_passages``): mean token NLL of the passage after its
  first word. Continuous and paired, so it sees forgetting the 40 0/1 items of ``mc_accuracy`` cannot; the
  gate holds it non-inferior. Lower is better.
* **mc_choice_only** — ``mc_accuracy`` with an empty question: what the choices alone give away.
* **knowledge_closed** / **knowledge_open** — for each knowledge-probe item (``probe.jsonl``, written by the
  dataset step): 1 if the right choice wins, as for ``mc_accuracy``; ``closed`` items are asked alone, ``open``
  items inside the ``cbnano ask`` prompt with their retrieved passages (the mode System A serves). Their
  probabilities of the right choice are ``knowledge_closed_p`` / ``knowledge_open_p``, and
  ``knowledge_choice_only`` scores the closed items' choices with an empty question: near chance unless the
  choices alone give the answer away (or a model learnt to prefer values it saw, whatever the question).
* **knowledge_closed_cal** — the closed item's probability of the right choice when each choice is scored by
  what the question adds to it (its mean log-probability after the question less that after an empty
  question, then a softmax). It removes a value's own pull (a value seen in training against a distractor made
  in its unit), not the pull a value has given the property asked about: on seed 1 the format-only control
  still gained +0.091 here against the real candidate's +0.117 (docs/BENCHMARKS.md). Reported.
* **knowledge_closed_doc** — the gate's primary: the same, with each choice scored by what **the document**
  adds to it: its mean log-probability after the question less that after the item's ``contrast`` question
  (the same question about another document the candidate was trained on). A model that learnt which values
  go with which property, but not with which paper, gains nothing here; one that learnt the paper's values
  does. Items without a contrast (a month with one trained document of the source, the lab's own drops) fall
  back to the empty question.

Eval items: ``{"id", "question", "choices": [>= 2 strings], "answer": index}``. Held-out rows:
``{"id", "doc", "messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`` (``val.jsonl``).

Sequences are scored in length-sorted, right-padded batches of at most ``max_batch_tokens`` tokens; only the
answer positions are turned into log-probabilities, so memory stays bounded on large vocabularies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipelines.contracts import ChatRow, ChoiceItem, PassageRow, ProbeItem, Scores

Pair = tuple[list[int], list[int]]  # (prompt token ids, continuation token ids)
Messages = Sequence[dict[str, str]]


def load_items(path: Path) -> list[ChoiceItem]:
    """Eval items from a JSONL file; raises ValueError naming the line of a malformed or repeated item."""
    items: list[ChoiceItem] = []
    seen: set[str] = set()
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        choices = item.get("choices")
        if not (
            isinstance(item.get("id"), str)
            and isinstance(item.get("question"), str)
            and isinstance(choices, list)
            and len(choices) >= 2
            and isinstance(item.get("answer"), int)
            and 0 <= item["answer"] < len(choices)
        ):
            raise ValueError(
                f"{path}:{n}: an item needs an id, a question, >= 2 choices and a valid answer index"
            )
        if item["id"] in seen:
            raise ValueError(f"{path}:{n}: item id {item['id']!r} repeats")
        seen.add(item["id"])
        items.append(item)
    return items


def user_message(text: str) -> list[dict[str, str]]:
    """A one-turn conversation asking ``text``."""
    return [{"role": "user", "content": text}]


def judge(
    items: Sequence[ChoiceItem], means: Sequence[Sequence[float]]
) -> tuple[dict[str, float], dict[str, float]]:
    """(item id → 1.0/0.0 the right choice scores highest, item id → its probability: the scores normalised
    with a softmax) from each item's choice scores."""
    correct, prob = {}, {}
    for item, scores in zip(items, means, strict=True):
        top = max(scores)
        weights = [math.exp(m - top) for m in scores]
        correct[item["id"]] = float(max(range(len(scores)), key=scores.__getitem__) == item["answer"])
        prob[item["id"]] = weights[item["answer"]] / sum(weights)
    return correct, prob


class Scorer:
    """A model (base, or base with an adapter) and its tokenizer; the per-item scoring methods."""

    def __init__(self, model: Any, tok: Any, device: str = "cpu", max_batch_tokens: int = 4096) -> None:
        import torch

        self.torch = torch
        self.model = model.eval()
        self.tok = tok
        self.device = device
        self.max_batch_tokens = max_batch_tokens
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def _encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False).input_ids)

    def chat_pair(self, messages: Sequence[dict[str, str]]) -> Pair:
        """(prompt, answer) token ids of a conversation whose last turn is the assistant's.

        The prompt is the chat template up to the assistant's turn (generation prompt included); the answer is
        the rest of the templated conversation up to and including the end-of-turn token.
        """
        prompt = self.tok.apply_chat_template(list(messages[:-1]), tokenize=False, add_generation_prompt=True)
        full = self.tok.apply_chat_template(list(messages), tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not extend the prompt with the answer; cannot score it")
        answer = self._encode(full[len(prompt) :])
        eos = self.tok.eos_token_id
        if eos in answer:
            answer = answer[: answer.index(eos) + 1]
        return self._encode(prompt), answer

    def continuation_logprobs(self, pairs: Sequence[Pair]) -> list[tuple[float, int]]:
        """For each (prompt, continuation): (sum of the continuation tokens' log-probabilities, their count)."""
        torch = self.torch
        out: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
        order = sorted(
            (i for i in range(len(pairs)) if pairs[i][1]), key=lambda i: len(pairs[i][0]) + len(pairs[i][1])
        )
        batch: list[int] = []

        def run(batch: list[int]) -> None:
            width = max(len(pairs[i][0]) + len(pairs[i][1]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                seq = pairs[i][0] + pairs[i][1]
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            with torch.no_grad():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                for row, i in enumerate(batch):
                    p, c = pairs[i]
                    lp = torch.log_softmax(logits[row, len(p) - 1 : len(p) + len(c) - 1].float(), dim=-1)
                    target = torch.tensor(c, device=lp.device)[:, None]
                    out[i] = (float(lp.gather(1, target).sum()), len(c))

        for i in order:
            length = len(pairs[i][0]) + len(pairs[i][1])
            if batch and (len(batch) + 1) * length > self.max_batch_tokens:
                run(batch)
                batch = []
            batch.append(i)
        if batch:
            run(batch)
        return out

    def heldout(self, rows: Sequence[ChatRow]) -> dict[str, float]:
        """Held-out document → mean token NLL of the assistant's answers to its examples (``heldout_loss``).

        The item is the document, not the example: a paper's title, summary and finding examples share its
        text, so scoring them as separate items would overstate how many independent observations there are.
        """
        scores = self.continuation_logprobs([self.chat_pair(r["messages"]) for r in rows])
        nll: dict[str, float] = {}
        count: dict[str, int] = {}
        for row, (total, n) in zip(rows, scores, strict=True):
            doc = str(row.get("doc") or row["id"])
            nll[doc] = nll.get(doc, 0.0) - total
            count[doc] = count.get(doc, 0) + n
        return {doc: nll[doc] / count[doc] for doc in nll if count[doc]}

    def shared_prompt_logprobs(
        self, prompt: list[int], conts: Sequence[list[int]]
    ) -> list[tuple[float, int]]:
        """:meth:`continuation_logprobs` for several continuations of one prompt: the prompt runs once and its
        key/value cache serves every continuation (a long open-book prompt is not recomputed per choice)."""
        torch = self.torch
        with torch.no_grad():
            first = self.model(input_ids=torch.tensor([prompt], device=self.device), use_cache=True)
            head = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
            cache = first.past_key_values
            cache.batch_repeat_interleave(len(conts))
            width = max(len(c) for c in conts)
            ids = torch.full((len(conts), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(conts), len(prompt) + width), dtype=torch.long)
            mask[:, : len(prompt)] = 1
            for row, c in enumerate(conts):
                ids[row, : len(c)] = torch.tensor(c)
                mask[row, len(prompt) : len(prompt) + len(c)] = 1
            logits = self.model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), past_key_values=cache
            ).logits
            out = []
            for row, c in enumerate(conts):
                total = float(head[c[0]])
                if len(c) > 1:
                    lp = torch.log_softmax(logits[row, : len(c) - 1].float(), dim=-1)
                    total += float(lp.gather(1, torch.tensor(c[1:], device=lp.device)[:, None]).sum())
                out.append((total, len(c)))
        return out

    def multiple_choice(
        self,
        items: Sequence[ChoiceItem],
        prompt_of: Callable[[Any], Messages] | None = None,
        share_prompt: bool = False,
    ) -> tuple[dict[str, float], dict[str, float]]:
        """(item id → 1.0/0.0 correct, item id → probability of the right choice) for ``items``, each asked as
        ``prompt_of(item)`` (default: its question alone). ``share_prompt`` scores each item's choices on one
        cached run of its prompt (:meth:`shared_prompt_logprobs`), for long prompts."""
        return judge(items, self.choice_means(items, prompt_of, share_prompt))

    def choice_means(
        self,
        items: Sequence[ChoiceItem],
        prompt_of: Callable[[Any], Messages] | None = None,
        share_prompt: bool = False,
    ) -> list[list[float]]:
        """Per item, each choice's mean token log-probability as the answer to ``prompt_of(item)`` (see
        :meth:`multiple_choice`)."""
        pairs: list[Pair] = []
        for item in items:
            messages = prompt_of(item) if prompt_of else user_message(item["question"])
            prompt = self._encode(
                self.tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            )
            pairs += [(prompt, self._encode(choice)) for choice in item["choices"]]
        if share_prompt:
            scored: list[tuple[float, int]] = []
            at = 0
            for item in items:
                group = pairs[at : at + len(item["choices"])]
                scored += self.shared_prompt_logprobs(group[0][0], [c for _, c in group])
                at += len(group)
            scores = iter(scored)
        else:
            scores = iter(self.continuation_logprobs(pairs))
        return [[total / max(n, 1) for total, n in (next(scores) for _ in item["choices"])] for item in items]

    def passages(self, rows: Sequence[PassageRow]) -> dict[str, float]:
        """Passage id → mean token NLL of its text after the first word (``general_loss``)."""
        pairs: list[Pair] = []
        for row in rows:
            first, _, rest = str(row["text"]).partition(" ")
            pairs.append((self._encode(first), self._encode(" " + rest)))
        return {
            row["id"]: -total / n
            for row, (total, n) in zip(rows, self.continuation_logprobs(pairs), strict=True)
            if n
        }

    def knowledge(self, probe: Sequence[ProbeItem], domain: str | None) -> dict[str, dict[str, float]]:
        """The knowledge probe's per-item scores (see the module docstring)."""
        from pipelines.prompt import ask_messages

        out: dict[str, dict[str, float]] = {}
        closed = [it for it in probe if it["kind"] == "closed"]
        opened = [it for it in probe if it["kind"] == "open"]
        if closed:  # every set on one cached prompt run per item (same numbers, a quarter of the prompt work)
            asked = self.choice_means(closed, share_prompt=True)
            alone = self.choice_means(closed, lambda it: user_message(""), share_prompt=True)
            out["knowledge_closed"], out["knowledge_closed_p"] = judge(closed, asked)
            out["knowledge_choice_only"], _ = judge(closed, alone)
            # what the question adds: each choice's score given the question less its score given none, so a
            # value the model merely saw in training (whatever the document) gains nothing
            lifted = [
                [q - e for q, e in zip(qs, es, strict=True)] for qs, es in zip(asked, alone, strict=True)
            ]
            _, out["knowledge_closed_cal"] = judge(closed, lifted)
            # what the document adds: each choice's score given the question less given the same question
            # about another trained document, so values learnt for the property, whatever the paper, cancel
            versus = self.choice_means(
                closed, lambda it: user_message(it.get("contrast") or ""), share_prompt=True
            )
            bound = [
                [q - c for q, c in zip(qs, cs, strict=True)] for qs, cs in zip(asked, versus, strict=True)
            ]
            _, out["knowledge_closed_doc"] = judge(closed, bound)
        if opened:
            out["knowledge_open"], out["knowledge_open_p"] = self.multiple_choice(
                opened,
                lambda it: ask_messages(it["question"], it.get("passages") or [], domain),
                share_prompt=True,
            )
        return out

    def score(
        self,
        items: Sequence[ChoiceItem],
        heldout_rows: Sequence[ChatRow],
        probe: Sequence[ProbeItem] = (),
        domain: str | None = None,
        general: Sequence[PassageRow] = (),
    ) -> Scores:
        """``{"metrics": {metric: mean}, "per_item": {metric: {id: score}}}`` for this model."""
        per_item: dict[str, dict[str, float]] = {}
        if heldout_rows:
            per_item["heldout_loss"] = self.heldout(heldout_rows)
        if items:
            per_item["mc_accuracy"], per_item["mc_prob"] = self.multiple_choice(items, share_prompt=True)
            per_item["mc_choice_only"], _ = self.multiple_choice(
                items, lambda it: user_message(""), share_prompt=True
            )
        if general:
            per_item["general_loss"] = self.passages(general)
        if probe:
            per_item.update(self.knowledge(probe, domain))
        metrics = {m: round(math.fsum(v.values()) / len(v), 6) for m, v in per_item.items() if v}
        return {
            "metrics": metrics,
            "per_item": {m: {k: round(s, 6) for k, s in v.items()} for m, v in per_item.items()},
        }
