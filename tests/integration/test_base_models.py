"""The real CPU base (SmolLM2-135M-Instruct from its GGUF), its special tokens, and the GPU check's smoke run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.trainenv import StepError, run_step
from pipelines.training.base_models import import_smollm2

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TRAIN_PYTHON = str(ROOT / ".venv-train" / "bin" / "python")

GGUF_FACTS = r"""
import json
from pipelines.training.steps.import_base import gguf_metadata, smollm2_gguf
meta = gguf_metadata(smollm2_gguf())
print(json.dumps({"eos": meta["tokens"][meta["eos_token_id"]], "eos_id": meta["eos_token_id"],
                  "pad": meta["tokens"][meta["padding_token_id"]], "pad_id": meta["padding_token_id"]}))
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    import_smollm2(store, TRAIN_PYTHON)
    return store


def test_smollm2_eos_and_pad_are_the_gguf_metadata_and_end_the_chat_turn(store):
    from transformers import AutoTokenizer

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    facts = json.loads(
        subprocess.run([TRAIN_PYTHON, "-c", GGUF_FACTS], capture_output=True, text=True, env=env, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    assert facts["eos"] == "<|im_end|>"  # the instruct model's end of turn, not <|im_start|>
    base = store / "base" / "smollm2"
    tok = AutoTokenizer.from_pretrained(base)
    assert (tok.eos_token, tok.eos_token_id) == (facts["eos"], facts["eos_id"])
    assert (tok.pad_token, tok.pad_token_id) == (facts["pad"], facts["pad_id"])
    config = json.loads((base / "config.json").read_text())
    generation = json.loads((base / "generation_config.json").read_text())
    assert config["eos_token_id"] == generation["eos_token_id"] == facts["eos_id"]
    assert config["pad_token_id"] == facts["pad_id"]
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}], tokenize=False
    )
    assert text.endswith("ok" + tok.eos_token + "\n")  # every turn, the answer included, ends with eos
    manifest = json.loads((base / "cbnano_base.json").read_text())
    assert manifest["test_model"] is False and manifest["eos_token"] == "<|im_end|>"


def test_evaluation_on_a_leased_gpu_that_torch_cannot_see_is_an_error(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"groups": [], "items": None, "heldout": None}))
    with pytest.raises(StepError, match=r"CUDA_VISIBLE_DEVICES=0 \(a leased GPU\) but torch .* sees no CUDA"):
        run_step(TRAIN_PYTHON, "evaluate", ["--spec", str(spec)], gpu=0)
    assert run_step(TRAIN_PYTHON, "evaluate", ["--spec", str(spec)])["device"] == "cpu"


def test_gpu_check_smoke_runs_the_whole_chain_on_cpu(store, tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CBNANO_")},
        "CBNANO_HOME": str(tmp_path / "home"),
        "CBNANO_MODEL_STORE": str(store),
        "CBNANO_TRAIN_PYTHON": TRAIN_PYTHON,
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_retrain.py"), "--smoke"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shape"] == "smoke" and out["device"] == "cpu" and out["steps"] == 2
    assert out["eval_dtype"].startswith("nf4")  # gpu_qlora evaluates the 4-bit base plus the adapter
    assert out["train_tokens_per_s"] > 0 and out["eval_seconds"] > 0 and out["eval_items"] == 160
    assert set(out["step_seconds"]) >= {
        "dataset",
        "validate",
        "train",
        "merge",
        "merge_check",
        "evaluate",
        "register",
    }
    assert out["gate"].startswith("refused: ")  # a random-init base is a test model: never production
    assert (store / "catalysis" / "versions" / out["version"] / "manifest.json").is_file()
