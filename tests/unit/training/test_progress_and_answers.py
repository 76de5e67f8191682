"""What a person sees of long steps: training progress lines, and a local answer that does not loop."""

import pytest

from pipelines.training.runner import progress_printer
from pipelines.training.steps.generate import without_repeats

pytestmark = pytest.mark.unit


def test_training_progress_comes_from_the_trainers_bar_and_loss_lines():
    said = []
    sink = progress_printer(said.append, every_s=0.0)
    # the dataset bars have a label before their percentage: they are not training steps
    sink("Tokenizing Prompts (num_proc=2): 100%|##########| 257/257 [00:00<00:00, 1234.5 examples/s]")
    assert said == []
    sink("{'loss': '1.643', 'grad_norm': '1.1', 'learning_rate': '0.0009', 'epoch': '0.2'}")
    sink(" 20%|##        | 21/106 [01:52<06:55,  4.89s/it]")
    sink("some other line")
    sink("100%|##########| 106/106 [09:19<00:00,  5.27s/it]")
    sink("100%|##########| 106/106 [09:19<00:00,  5.27s/it]")  # the bar's last line again: said once
    assert said == [
        "train: step 21/106, loss 1.643, 01:52 elapsed, about 06:55 left",
        "train: step 106/106, loss 1.643, 09:19 elapsed, about 00:00 left",
    ]


def test_progress_is_said_at_most_every_so_often_but_always_at_the_end():
    said = []
    sink = progress_printer(said.append, every_s=3600.0)
    for step in (1, 2, 3):
        sink(f" 10%|#         | {step}/10 [00:0{step}<00:09,  1.0s/it]")
    sink("100%|##########| 10/10 [00:10<00:00,  1.0s/it]")
    assert [line.split(",")[0] for line in said] == ["train: step 1/10", "train: step 10/10"]


def test_a_looping_answer_is_cut_at_its_first_repeated_sentence():
    looping = (
        "The process of dry reforming involves the oxidation of methane. It is a reaction. "
        "The process of dry reforming involves the oxidation of methane. It is a"
    )
    assert without_repeats(looping) == (
        "The process of dry reforming involves the oxidation of methane. It is a reaction."
    )
    assert without_repeats("Ceria stores oxygen [1]. Nickel stays clean [2].") == (
        "Ceria stores oxygen [1]. Nickel stays clean [2]."
    )
