"""The evaluator's log-likelihoods agree with transformers' own loss on a real (tiny) Llama."""

import json

import pytest
import torch

from pipelines.evaluation.scoring import Scorer, alpaca_prompt, load_items

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    from pipelines.training.tiny import build_tiny_llama, sample_corpus

    path = build_tiny_llama(tmp_path_factory.mktemp("m") / "tiny", sample_corpus(), vocab_size=512, seed=3)
    return Scorer(path)


def hf_mean_nll(scorer, prompt, continuation):
    p = scorer.tok(prompt, add_special_tokens=True).input_ids
    c = scorer.tok(continuation, add_special_tokens=False).input_ids
    ids = torch.tensor([p + c])
    labels = ids.clone()
    labels[0, :len(p)] = -100
    with torch.no_grad():
        return float(scorer.model(ids, labels=labels).loss)


PAIRS = [("Question: What stores oxygen?\nAnswer:", " ceria"),
         ("Question: Which salt is in Li-ion electrolytes?\nAnswer:", " lithium hexafluorophosphate"),
         (alpaca_prompt("Give the formula of water."), "H2O")]


def test_continuation_logprob_matches_transformers_loss(scorer):
    for prompt, cont in PAIRS:
        total, n = scorer.continuation_logprob(prompt, cont)
        assert n > 0 and -total / n == pytest.approx(hf_mean_nll(scorer, prompt, cont), rel=1e-4)


def test_mc_accuracy_picks_the_most_likely_choice(scorer, tmp_path):
    q = "Which oxide is a common catalyst support?"
    choices = ["ceria", "alumina", "silica gel beads", "titania"]
    nll = [hf_mean_nll(scorer, f"Question: {q}\nAnswer:", " " + c) for c in choices]
    best = min(range(4), key=nll.__getitem__)
    f = tmp_path / "eval.jsonl"
    f.write_text(json.dumps({"id": "a", "question": q, "choices": choices, "answer": best}) + "\n"
                 + json.dumps({"id": "b", "question": q, "choices": choices, "answer": (best + 1) % 4}) + "\n")
    items = load_items(f)
    assert scorer.mc_accuracy(items[:1]) == 1.0 and scorer.mc_accuracy(items[1:]) == 0.0


def test_val_loss_and_evaluate(scorer):
    rows = [{"instruction": "Give the formula of water.", "input": "", "output": "H2O"},
            {"instruction": "Name the support.", "input": "Pt on CeO2", "output": "ceria"}]
    expected_total = 0.0
    expected_n = 0
    for r in rows:
        prompt = alpaca_prompt(r["instruction"], r["input"])
        n = len(scorer.tok(r["output"], add_special_tokens=False).input_ids)
        expected_total += hf_mean_nll(scorer, prompt, r["output"]) * n
        expected_n += n
    assert scorer.val_loss(rows) == pytest.approx(expected_total / expected_n, rel=1e-4)
    assert 0.0 <= scorer.exact_match(rows[:1], max_new_tokens=4) <= 1.0


def test_bad_eval_items_are_named(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 5}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_items(f)
