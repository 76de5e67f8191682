"""Real axolotl 0.19 in .venv-train on the tiny profile: configs validate, LoRA and QLoRA train, merge works."""

import json
from pathlib import Path

import pytest

from pipelines.training.configs import DOMAINS, PROFILES, render_config, validate_in_train_env, write_config
from pipelines.training.runner import adapter_changed, check_merge, merge, train

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TRAIN_PYTHON = ROOT / ".venv-train" / "bin" / "python"


@pytest.fixture(scope="module")
def train_python():
    assert TRAIN_PYTHON.exists(), "the training environment is missing: run `make setup-train`"
    return str(TRAIN_PYTHON)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pipelines.training.tiny import build_tiny_llama, sample_corpus

    return build_tiny_llama(tmp_path_factory.mktemp("base") / "tiny-llama", sample_corpus(), vocab_size=512)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    rows = [{"instruction": f"What is the molecular formula of compound {i}?", "input": "",
             "output": f"The formula of compound {i} is C{i}H{2 * i + 2}."} for i in range(1, 41)]
    (d / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return d / "train.jsonl"


def run_values(tiny, dataset, **extra):
    return {"base_model": str(tiny), "datasets": [{"path": str(dataset), "type": "alpaca", "ds_type": "json"}],
            **extra}


def test_every_profile_and_domain_validates(train_python, tiny, dataset, tmp_path):
    paths = [write_config(render_config(p, d, run_values(tiny, dataset)), tmp_path / f"{p}-{d}.yml")
             for p in PROFILES for d in DOMAINS]
    assert validate_in_train_env(paths, train_python) == []


def test_keys_axolotl_would_drop_are_rejected(train_python, tiny, dataset, tmp_path):
    cfg = render_config("tiny", "thermal", run_values(tiny, dataset, lora_rank=8, learning_rat=0.1))
    problems = validate_in_train_env([write_config(cfg, tmp_path / "typo.yml")], train_python)
    assert len(problems) == 1 and "learning_rat, lora_rank" in problems[0]


def test_tiny_lora_trains_resumes_and_merges(train_python, tiny, dataset, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = render_config("tiny", "catalysis", run_values(tiny, dataset, max_steps=6, save_steps=3))
    run_dir = tmp_path / "run"
    lines = []
    first = train(cfg, run_dir, train_python, log=lines.append)
    assert adapter_changed(first.adapter_dir)
    assert len(first.losses) >= 5 and first.resumed_from is None
    assert any("loss" in line for line in lines) and (run_dir / "train.log").is_file()
    # a retried task finds the checkpoints and resumes from the newest one
    again = train(cfg, run_dir, train_python)
    assert again.resumed_from and again.resumed_from.endswith("checkpoint-6")

    merged = merge(run_dir, train_python)
    model = AutoModelForCausalLM.from_pretrained(merged)
    tok = AutoTokenizer.from_pretrained(merged)
    base = AutoModelForCausalLM.from_pretrained(tiny)
    ids = tok("The formula of compound 3 is", return_tensors="pt").input_ids
    merged_logits, base_logits = model(ids).logits, base(ids).logits
    assert merged_logits.isfinite().all()
    assert (merged_logits - base_logits).abs().max() > 0  # the merge carried the trained delta
    # and it computes what base + adapter computes
    assert check_merge(run_dir, train_python, ["The formula of compound 3 is", "What is the molecular"]) < 1e-3


def test_tiny_qlora_trains_on_cpu(train_python, tiny, dataset, tmp_path):
    cfg = render_config("tiny", "chemistry", run_values(tiny, dataset, adapter="qlora", load_in_4bit=True,
                                                        max_steps=4, save_steps=4))
    result = train(cfg, tmp_path / "qrun", train_python)
    assert adapter_changed(result.adapter_dir) and result.losses
    assert json.loads((result.adapter_dir / "adapter_config.json").read_text())["r"] == 8
