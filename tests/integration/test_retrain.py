"""The monthly chain on the tiny profile with real axolotl: publish when the gate passes, nothing when not."""

import json
from datetime import UTC, datetime

import pytest

from pipelines.publishing.model_store import ModelStore
from pipelines.settings import get_settings, reset_settings_cache

pytestmark = pytest.mark.integration


@pytest.fixture
def lake(replay, fixtures_dir, monkeypatch):
    from pipelines.ingestion.arxiv import ingest_arxiv
    from pipelines.ingestion.pubchem import ingest_pubchem

    srv = replay(pubchem_dir=fixtures_dir / "pubchem")
    monkeypatch.setenv("CBNANO_PUBCHEM_URL", srv.pubchem_url)
    monkeypatch.setenv("CBNANO_TRAIN_PYTHON", str(fixtures_dir.parents[1] / ".venv-train" / "bin" / "python"))
    reset_settings_cache()
    settings = get_settings()
    ingest_arxiv(settings, datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC),
                 ["cond-mat.mtrl-sci", "physics.chem-ph"], dry_run=True)
    ingest_pubchem(settings, names=["water", "TiO2", "cerium oxide", "ethylene carbonate"], cids=[5564],
                   dry_run=True)
    return settings


def test_tiny_retrain_publishes_then_refuses(lake):
    from pipelines.training.retrain import retrain

    log = []
    out = retrain(lake, "catalysis", "tiny", month="2026-11", min_gain=-1.0, max_steps=4, log=log.append)
    assert out["published"] is True and out["reason"].startswith("published: mc_accuracy")
    assert set(out["metrics"]) == {"base", "candidate"}
    assert set(out["metrics"]["candidate"]) == {"mc_accuracy", "val_loss", "exact_match"}
    store = ModelStore(lake.model_store)
    assert store.production("catalysis") == out["version"]
    vdir = store.version_dir("catalysis", out["version"])
    man = json.loads((vdir / "manifest.json").read_text())
    assert {"merged/model.safetensors", "adapter/adapter_model.safetensors", "eval.json", "eval.png",
            "MODEL_CARD.md", "dataset_card.json", "config.yml"} <= set(man["files"])
    assert man["dataset_sha256"] and man["code_revision"] and man["base_model"].endswith("tiny-llama")
    assert store.verify("catalysis", out["version"]) == []
    assert any(line.startswith("dataset:") for line in log)

    # another candidate (other config) with a bar none can clear: refused, compared with production,
    # nothing new under versions/
    again = retrain(lake, "catalysis", "tiny", month="2026-11", min_gain=1.0, max_steps=3)
    assert again["published"] is False and again["reason"].startswith("refused:")
    assert set(again["metrics"]) == {"base", "production", "candidate"}
    assert [v.version for v in store.versions("catalysis")] == [out["version"]]

    # the first run's inputs again: that model exists, so nothing is retrained or republished
    same = retrain(lake, "catalysis", "tiny", month="2026-11", min_gain=-1.0, max_steps=4)
    assert same["reason"].startswith("unchanged:") and same["version"] == out["version"]
    assert [v.version for v in store.versions("catalysis")] == [out["version"]]


def test_too_small_dataset_is_refused_without_training(lake):
    from pipelines.training.retrain import retrain

    out = retrain(lake, "thermal", "tiny", month="2026-11", max_steps=2)
    assert out["published"] is False and "need at least" in out["reason"]
    assert not (lake.home / "runs").exists()


def test_domain_retraining_dag(airflow_db, lake):
    import pendulum
    from domain_retraining import domain_retraining_dag as dag

    # the run of 2026-12-01 00:00 covers the data interval of November
    run = dag.test(logical_date=pendulum.datetime(2026, 12, 1, tz="UTC"),
                   run_conf={"domains": ["catalysis"], "profile": "tiny", "max_steps": 3, "min_gain": -1.0})
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}
    assert states[("retrain_domain", 0)] == "success", states
    assert states[("announce_catalysis", -1)] == "success"
    assert states[("announce_thermal", -1)] == "skipped"
    store = ModelStore(get_settings().model_store)
    assert (store.production("catalysis") or "").startswith("2026-11.")


def test_cli_retrain_keeps_torch_out_of_its_process(lake):
    """The process that orchestrates (an Airflow task, or the CLI) never imports torch or axolotl."""
    import os
    import subprocess
    import sys

    probe = ("import sys, json; from pipelines.cli import main; "
             "rc = main(['retrain', '--domain', 'catalysis', '--profile', 'tiny', '--month', '2026-11', "
             "'--max-steps', '2', '--min-gain', '1.0']); "
             "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'axolotl', 'transformers'}); "
             "print(json.dumps({'rc': rc, 'heavy': heavy}))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=dict(os.environ),
                          timeout=900)
    last = proc.stdout.strip().splitlines()
    result = json.loads(last[-1])
    summary = json.loads(last[-2])
    assert result == {"rc": 0, "heavy": []}, proc.stderr[-2000:]
    assert summary["published"] is False and summary["reason"].startswith("refused:")
    assert set(summary) == {"domain", "version", "published", "reason", "metrics"}


def test_domain_retraining_dry_run_builds_the_dataset_only(airflow_db, lake):
    import pendulum
    from domain_retraining import domain_retraining_dag as dag

    run = dag.test(logical_date=pendulum.datetime(2026, 12, 1, tz="UTC"),
                   run_conf={"domains": ["catalysis"], "dry_run": True})
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}
    assert states[("retrain_domain", 0)] == "skipped" and states[("announce_catalysis", -1)] == "skipped"
    assert (lake.data_dir / "datasets" / "catalysis" / "2026-11" / "dataset_card.json").is_file()
    assert not (lake.home / "runs").exists()
