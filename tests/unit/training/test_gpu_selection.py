"""Model work runs on the GPU the task leased: the training-environment steps get CUDA_VISIBLE_DEVICES set
to that GPU (and to "" without one). Inspected with a stand-in interpreter that records what it was given."""

import json
import stat

import pytest

from pipelines.evaluation.evaluate import evaluate_roles
from pipelines.settings import load_settings
from pipelines.trainenv import StepError, run_step
from pipelines.training.runner import check_merge

pytestmark = pytest.mark.unit

FAKE = r"""#!/bin/sh
printf '%s|%s\n' "${CUDA_VISIBLE_DEVICES-unset}" "$*" >> "$CBNANO_FAKE_RECORD"
case "$*" in
  *steps.evaluate*) echo "loading weights" >&2; echo "progress: evaluate: base scored" >&2; echo "progress: evaluate: candidate scored" >&2; echo '{"roles": {"base": {"metrics": {"mc_accuracy": 0.5}, "per_item": {"mc_accuracy": {"a": 1.0, "b": 0.0}}}, "candidate": {"metrics": {"mc_accuracy": 1.0}, "per_item": {"mc_accuracy": {"a": 1.0, "b": 1.0}}}}, "device": "cuda", "dtype": "nf4+bfloat16", "seconds": 1.0, "peak_gpu_gib": 5.5, "items": 2, "heldout": 0}' ;;
  *steps.check_merge*) echo '{"lora_tensors": 2, "other_tensors": 1, "max_rel_diff": 0.002, "changed": 2, "others_changed": [], "others_missing": [], "device": "cuda"}' ;;
  *steps.failing*) echo "error: something broke" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    path = tmp_path / "venv" / "bin" / "python"
    path.parent.mkdir(parents=True)
    path.write_text(FAKE)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "calls.txt"
    monkeypatch.setenv("CBNANO_FAKE_RECORD", str(record))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # what the worker process itself sees
    return path, record


def calls(record):
    return [line.split("|", 1) for line in record.read_text().splitlines()]


def test_evaluation_runs_on_the_leased_gpu(fake_python, tmp_path):
    python, record = fake_python
    settings = load_settings({"CBNANO_HOME": str(tmp_path / "home"), "CBNANO_TRAIN_PYTHON": str(python)})
    roles = {"base": (tmp_path / "base", None), "candidate": (tmp_path / "base", tmp_path / "run" / "out")}
    spec = tmp_path / "run" / "eval_spec.json"
    said = []
    out = evaluate_roles(
        settings, "catalysis", roles, tmp_path / "val.jsonl", True, 1, spec, progress=said.append
    )
    assert said == [
        "evaluate: base scored",
        "evaluate: candidate scored",
    ]  # progress lines only, as they came
    [(visible, args)] = calls(record)
    assert visible == "1" and args == f"-m pipelines.training.steps.evaluate --spec {spec}"
    written = json.loads(spec.read_text())
    assert written["load_in_4bit"] is True and written["groups"] == [
        {"base": str(tmp_path / "base"), "roles": {"base": None, "candidate": str(tmp_path / "run" / "out")}}
    ]
    assert out["per_item"] == {
        "mc_accuracy": {"base": {"a": 1.0, "b": 0.0}, "candidate": {"a": 1.0, "b": 1.0}}
    }
    assert out["device"] == "cuda" and out["peak_gpu_gib"] == 5.5

    evaluate_roles(settings, "catalysis", roles, tmp_path / "val.jsonl", False, None, spec)
    assert calls(record)[1][0] == ""  # no lease: no GPU visible, not the worker's "0,1"


def test_merge_check_runs_on_the_leased_gpu(fake_python, tmp_path):
    python, record = fake_python
    report = check_merge(tmp_path / "base", tmp_path / "out", tmp_path / "out" / "merged", str(python), gpu=0)
    [(visible, args)] = calls(record)
    assert visible == "0" and args.startswith("-m pipelines.training.steps.check_merge --base ")
    assert report["changed"] == 2


def test_step_failures_and_a_missing_environment_are_one_line(fake_python, tmp_path):
    python, _ = fake_python
    with pytest.raises(StepError, match=r"step failing failed \(exit 2\): error: something broke"):
        run_step(str(python), "failing", [])
    with pytest.raises(FileNotFoundError, match="make setup-train"):
        run_step(str(tmp_path / "nowhere" / "python"), "evaluate", [])


def test_retrain_hands_its_gpu_to_training_merge_check_and_evaluation(monkeypatch, cbnano_env, tmp_path):
    """The chain's wiring: every model step gets the task's GPU, and with ``cbnano.adapter_scale`` below 1 the
    scaled copy of the trained adapter is what the merge, its check and the evaluation get."""
    from pipelines.publishing.bases import BaseModel
    from pipelines.training import retrain as chain
    from pipelines.training.runner import TrainResult

    seen = {}
    base = BaseModel("smollm2", tmp_path / "base", False)
    ds = tmp_path / "ds"
    ds.mkdir()
    card = {
        "train": 30,
        "validation": 6,
        "validation_documents": 5,
        "sha256": "ab" * 32,
        "by_source": {},
        "files": {
            "train": str(ds / "train.jsonl"),
            "train_text": str(ds / "train_text.jsonl"),
            "validation": str(ds / "val.jsonl"),
            "probe": str(ds / "probe.jsonl"),
        },
    }
    from pipelines.training.configs import render_config
    from pipelines.training.request import RetrainRequest

    run = {"base_model": str(base.path), "seed": 42, "cbnano": {"adapter_scale": 0.5}}
    cfg = render_config("gpu_qlora", "catalysis", run)
    monkeypatch.setattr(chain, "prepare_dataset", lambda *a, **k: chain.Prepared(base, card, [], cfg))
    monkeypatch.setattr(chain, "validate_in_train_env", lambda *a, **k: [])

    def train(cfg, run_dir, py, gpu=None, log=None):
        seen["train"] = gpu
        return TrainResult(run_dir, run_dir / "out", [1.0], None)

    def check(base, adapter_dir, merged, py, gpu=None):
        seen["merge_check"] = (gpu, adapter_dir.name)
        return {}

    def interpolate(adapter_dir, into, scale, py):
        seen["interpolate"] = (adapter_dir.name, into.name, scale)
        return {"scaled": 2}

    monkeypatch.setattr(chain, "train", train)
    monkeypatch.setattr(chain, "adapter_changed", lambda d: True)

    def merge(run_dir, py, gpu=None, log=None, adapter_dir=None):
        seen["merge"] = (gpu, adapter_dir.name)
        return run_dir / "out" / "merged"

    monkeypatch.setattr(chain, "merge", merge)
    monkeypatch.setattr(chain, "check_merge", check)
    monkeypatch.setattr(chain, "interpolate", interpolate)

    def evaluate(settings, domain, roles, heldout, load_in_4bit, gpu, spec_path, probe=None, progress=None):
        seen["evaluate"] = (gpu, roles["candidate"][1].name)
        raise RuntimeError("stop after evaluation")

    monkeypatch.setattr(chain, "evaluate_roles", evaluate)
    with pytest.raises(RuntimeError, match="stop after evaluation"):
        request = RetrainRequest("catalysis", "2026-11", "gpu_qlora", "smollm2", "smollm2", "--base-model")
        chain.retrain(cbnano_env, request, gpu=1)
    assert seen == {
        "train": 1,
        "interpolate": ("out", "adapter", 0.5),  # adapter-sized arithmetic: no GPU needed
        "merge": (1, "adapter"),
        "merge_check": (1, "adapter"),
        "evaluate": (1, "adapter"),
    }
