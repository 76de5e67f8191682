"""The fixed multiple-choice sets (the forgetting guard) give nothing away by the length of the answer."""

import pytest

from pipelines.evaluation.evaluate import eval_items_path, general_passages
from pipelines.evaluation.scoring import load_items
from pipelines.settings import DOMAINS
from pipelines.training.knowledge import probe_baselines

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("domain", DOMAINS)
def test_picking_the_longest_choice_scores_near_chance(domain):
    b = probe_baselines(load_items(eval_items_path(domain)))
    assert b["chance"] == 0.25 and abs(b["longest_choice"] - b["chance"]) <= 0.1, b


def test_general_passages_state_every_items_right_answer():
    passages = general_passages()
    assert len(passages) == 40 * len(DOMAINS) and len({p["id"] for p in passages}) == len(passages)
    first = load_items(eval_items_path(DOMAINS[0]))[0]
    assert passages[0] == {
        "id": f"general:{first['id']}",
        "text": f"{first['question']} {first['choices'][first['answer']]}.",
    }
