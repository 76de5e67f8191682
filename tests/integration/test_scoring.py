"""The per-item scorer agrees with transformers' own loss on a real (tiny) Llama, batched or not."""

import json
import math

import pytest
import torch

from pipelines.evaluation.scoring import Scorer, load_items, user_message

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.training.tiny import build_tiny_llama, sample_corpus

    path = build_tiny_llama(tmp_path_factory.mktemp("m") / "tiny", sample_corpus(), vocab_size=512, seed=3)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    # a small batch budget, so the test exercises several right-padded batches of different widths
    return Scorer(model, AutoTokenizer.from_pretrained(path), max_batch_tokens=96)


def hf_mean_nll(scorer, prompt_ids, cont_ids):
    ids = torch.tensor([prompt_ids + cont_ids])
    labels = ids.clone()
    labels[0, : len(prompt_ids)] = -100
    with torch.no_grad():
        return float(scorer.model(ids, labels=labels).loss)


CHATS = [
    [{"role": "user", "content": "What stores oxygen?"}, {"role": "assistant", "content": "ceria"}],
    [
        {"role": "user", "content": "Which salt is in Li-ion electrolytes? Name the usual one."},
        {"role": "assistant", "content": "lithium hexafluorophosphate, LiPF6"},
    ],
    [{"role": "user", "content": "Give the formula of water."}, {"role": "assistant", "content": "H2O"}],
]


def test_chat_pair_is_the_templated_conversation_cut_at_end_of_turn(scorer):
    prompt, answer = scorer.chat_pair(CHATS[2])
    tok = scorer.tok
    assert tok.decode(prompt) == tok.apply_chat_template(
        CHATS[2][:1], tokenize=False, add_generation_prompt=True
    )
    assert tok.decode(answer) == "H2O</s>" and answer[-1] == tok.eos_token_id


def test_batched_logprobs_match_transformers_loss(scorer):
    pairs = [scorer.chat_pair(c) for c in CHATS] * 3
    scores = scorer.continuation_logprobs(pairs)
    assert len(scores) == len(pairs)
    for (p, c), (total, n) in zip(pairs, scores, strict=True):
        assert n == len(c) and -total / n == pytest.approx(hf_mean_nll(scorer, p, c), rel=1e-4)


def test_heldout_scores_documents_token_weighted(scorer):
    rows = [
        {"id": "a", "doc": "arxiv:1", "messages": CHATS[0]},
        {"id": "b", "doc": "arxiv:1", "messages": CHATS[1]},
        {"id": "c", "doc": "pubchem:962", "messages": CHATS[2]},
    ]
    per = scorer.heldout(rows)
    assert set(per) == {"arxiv:1", "pubchem:962"}
    (p0, c0), (p1, c1) = scorer.chat_pair(CHATS[0]), scorer.chat_pair(CHATS[1])
    expected = (hf_mean_nll(scorer, p0, c0) * len(c0) + hf_mean_nll(scorer, p1, c1) * len(c1)) / (
        len(c0) + len(c1)
    )
    assert per["arxiv:1"] == pytest.approx(expected, rel=1e-4)


def test_multiple_choice_picks_the_most_likely_choice(scorer, tmp_path):
    q = "Which oxide is a common catalyst support?"
    choices = ["ceria", "alumina", "silica gel beads", "titania"]
    prompt = scorer._encode(
        scorer.tok.apply_chat_template(user_message(q), tokenize=False, add_generation_prompt=True)
    )
    nll = [hf_mean_nll(scorer, prompt, scorer._encode(c)) for c in choices]
    best = min(range(4), key=nll.__getitem__)
    f = tmp_path / "eval.jsonl"
    f.write_text(
        json.dumps({"id": "a", "question": q, "choices": choices, "answer": best})
        + "\n"
        + json.dumps({"id": "b", "question": q, "choices": choices, "answer": (best + 1) % 4})
        + "\n"
    )
    correct, prob = scorer.multiple_choice(load_items(f))
    assert correct == {"a": 1.0, "b": 0.0}
    weights = [math.exp(-x) for x in nll]
    assert prob["a"] == pytest.approx(weights[best] / sum(weights), rel=1e-3) and prob["b"] < prob["a"]
    scored = scorer.score(load_items(f), [])
    assert scored["metrics"]["mc_accuracy"] == 0.5
    assert set(scored["per_item"]) == {"mc_accuracy", "mc_prob", "mc_choice_only"}


def test_knowledge_probe_and_general_passages_are_scored_as_served(scorer):
    """Closed items are asked alone, open items inside the ask prompt with their passages; general passages
    get their token NLL after the first word; the choice-only baseline asks nothing."""
    from pipelines.prompt import ask_messages

    choices = ["0.2 W m-1 K-1", "12 W m-1 K-1", "9 W m-1 K-1", "0.5 W m-1 K-1"]
    closed = {
        "id": "arxiv:1#closed-a",
        "kind": "closed",
        "question": "Which conductivity?",
        "choices": choices,
        "answer": 0,
        "contrast": "Which conductivity of the other paper?",
    }
    opened = {
        **closed,
        "id": "arxiv:1#open-a",
        "kind": "open",
        "passages": ["[1] A paper (arxiv:1)\n0.2 W m-1 K-1."],
    }
    general = [{"id": "general:x", "text": "Water boils at 100 C."}]
    out = scorer.score([], [], [closed, opened], "thermal", general)
    assert set(out["per_item"]) == {
        "knowledge_closed",
        "knowledge_closed_p",
        "knowledge_closed_cal",
        "knowledge_closed_doc",
        "knowledge_choice_only",
        "knowledge_open",
        "knowledge_open_p",
        "general_loss",
    }
    alone, _ = scorer.multiple_choice([closed])
    served, p_served = scorer.multiple_choice(
        [opened], lambda it: ask_messages(it["question"], it["passages"], "thermal")
    )
    # the open items' shared-prompt path (one cached prompt run for all choices) gives the same numbers
    shared, p_shared = scorer.multiple_choice(
        [opened], lambda it: ask_messages(it["question"], it["passages"], "thermal"), share_prompt=True
    )
    assert shared == served and p_shared == pytest.approx(p_served, abs=1e-5)
    prompt = scorer._encode(
        scorer.tok.apply_chat_template(
            ask_messages("q", ["[1] x"], None), tokenize=False, add_generation_prompt=True
        )
    )
    conts = [scorer._encode(c) for c in choices]
    for (total, n), cont in zip(scorer.shared_prompt_logprobs(prompt, conts), conts, strict=True):
        assert -total / n == pytest.approx(hf_mean_nll(scorer, prompt, cont), rel=1e-4)
    nothing, _ = scorer.multiple_choice([closed], lambda it: user_message(""))
    assert out["per_item"]["knowledge_closed"] == alone and out["per_item"]["knowledge_open"] == served
    assert out["per_item"]["knowledge_open_p"] == pytest.approx(p_served, abs=1e-6)
    assert out["per_item"]["knowledge_choice_only"] == nothing
    # each choice scored by what the question adds (given the question less given none), and the gate's
    # primary: by what the document adds (given the question less given the contrast question)
    asked = scorer.choice_means([closed])[0]
    for metric, baseline in (("knowledge_closed_cal", ""), ("knowledge_closed_doc", closed["contrast"])):
        versus = scorer.choice_means([closed], lambda it, b=baseline: user_message(b))[0]
        lift = [q - e for q, e in zip(asked, versus, strict=True)]
        expected = math.exp(lift[0]) / sum(math.exp(x) for x in lift)
        assert out["per_item"][metric]["arxiv:1#closed-a"] == pytest.approx(expected, abs=1e-5)
    assert out["per_item"]["knowledge_closed_doc"] != out["per_item"]["knowledge_closed_cal"]
    first = scorer._encode("Water")
    rest = scorer._encode(" boils at 100 C.")
    assert out["per_item"]["general_loss"]["general:x"] == pytest.approx(
        hf_mean_nll(scorer, first, rest), rel=1e-3
    )


def test_bad_or_repeated_eval_items_are_named(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"id": "x", "question": "q", "choices": ["a", "b"], "answer": 5}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_items(f)
    item = json.dumps({"id": "x", "question": "q", "choices": ["a", "b"], "answer": 1})
    f.write_text(item + "\n" + item + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:2: item id 'x' repeats"):
        load_items(f)
