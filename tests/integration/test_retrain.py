"""The monthly chain with real axolotl on the tiny profile: every candidate becomes a version, the gate moves
production only on a significant gain, test models stay out of production, and a missing base stops a run
before anything is built."""

import dataclasses
import json
import shutil

import pytest
import yaml
from fixture_lake import stage_fixtures

from pipelines.publishing.model_store import ModelStore
from pipelines.settings import get_settings, reset_settings_cache

pytestmark = pytest.mark.integration


@pytest.fixture
def lake(replay, fixtures_dir, monkeypatch):
    """Papers and compounds staged from the fixtures, plus a lab drop of catalyst test results."""
    srv = replay(pubchem_dir=fixtures_dir / "pubchem")
    monkeypatch.setenv("CBNANO_PUBCHEM_URL", srv.pubchem_url)
    monkeypatch.setenv("CBNANO_TRAIN_PYTHON", str(fixtures_dir.parents[1] / ".venv-train" / "bin" / "python"))
    reset_settings_cache()
    settings = get_settings()
    stage_fixtures(settings, cids=[5564])
    drop = settings.data_dir / "internal" / "catalysis"
    drop.mkdir(parents=True)
    shutil.copy(fixtures_dir / "internal" / "catalysis.jsonl", drop / "lab.jsonl")
    return settings


# the probe has closed items only here: the test lake is staged without an index, so no passages to retrieve
METRICS = {
    "heldout_loss",
    "general_loss",
    "mc_accuracy",
    "mc_prob",
    "mc_choice_only",
    "knowledge_closed",
    "knowledge_closed_p",
    "knowledge_closed_cal",
    "knowledge_closed_doc",
    "knowledge_choice_only",
}


PRIMARY_LINE = "knowledge (closed-book, what the document adds) p(correct) gain"  # the gate's primary


def retrain(settings, domain="catalysis", *, log=None, **values):
    """The chain as the CLI and the DAG run it: a request resolved once, then the run."""
    from pipelines.training.request import resolve_request
    from pipelines.training.retrain import retrain as run

    return run(settings, resolve_request(settings, domain, **values), log=log)


def allow_test_models(monkeypatch, allowed):
    monkeypatch.setenv("CBNANO_ALLOW_TEST_MODELS", "1" if allowed else "0")
    reset_settings_cache()
    return get_settings()


def test_tiny_chain_registers_every_candidate_and_gates_production(lake, monkeypatch, capsys):
    from pipelines.cli import main

    store = ModelStore(lake.model_store)
    # 1. a test model (tiny profile) with a gate anyone would pass: a version, but never production. Without
    # CBNANO_ALLOW_TEST_MODELS no caller may ask for a negative bar, so the request is made, then bent
    from pipelines.training.request import RequestError, resolve_request
    from pipelines.training.retrain import retrain as run

    settings = allow_test_models(monkeypatch, False)
    with pytest.raises(RequestError, match="min_gain -1.0 would let a candidate worse than production"):
        resolve_request(settings, "catalysis", profile="tiny", month="2026-11", min_gain=-1.0)
    request = resolve_request(settings, "catalysis", profile="tiny", month="2026-11", max_steps=4)
    log = []
    first = run(settings, dataclasses.replace(request, min_gain=-1.0), log=log.append)
    assert first["published"] is False and first["version"]
    assert first["reason"].startswith("refused: test model (profile tiny) never becomes production")
    assert PRIMARY_LINE in first["reason"] and "(95% CI " in first["reason"]
    assert (
        "n=" in first["reason"]
        and "documents)" in first["reason"]
        and "detectable at 80% power" in first["reason"]
    )
    assert [v.version for v in store.versions("catalysis")] == [first["version"]] and not store.production(
        "catalysis"
    )
    assert main(["models", "promote", "--domain", "catalysis", "--version", first["version"]]) == 2
    assert "test model" in capsys.readouterr().err
    assert any(line.startswith("dataset:") for line in log) and any(
        line.startswith("step evaluate:") for line in log
    )

    vdir = store.version_dir("catalysis", first["version"])
    assert store.verify("catalysis", first["version"]) == []
    man = json.loads((vdir / "manifest.json").read_text())
    assert {
        "merged/model.safetensors",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "eval.json",
        "eval.png",
        "MODEL_CARD.md",
        "dataset_card.json",
        "config.yml",
    } <= set(man["files"])
    assert man["base_model"] == "tiny-llama" and man["test_model"] is True and man["code_revision"]
    # portable: the adapter names its base by its store name, not a path on this host
    adapter_cfg = json.loads((vdir / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == "tiny-llama"
    assert str(lake.home) not in (vdir / "adapter" / "adapter_config.json").read_text()
    assert (store.base_dir("tiny-llama") / "config.json").is_file()
    # a Hugging Face model card with YAML front matter
    card = (vdir / "MODEL_CARD.md").read_text()
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert (
        front["base_model"] == "tiny-llama"
        and front["library_name"] == "peft"
        and "catalysis" in front["tags"]
    )
    reported = {m["type"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert reported == METRICS
    # per-item results, paired on identical ids for every role
    report = json.loads((vdir / "eval.json").read_text())
    assert set(report["per_item"]) == METRICS
    # the knowledge probe, scored per item for every role, on the probe's own ids
    probe = [json.loads(x) for x in open(report["dataset"]["files"]["probe"])]
    closed = {it["id"] for it in probe if it["kind"] == "closed"}
    assert set(report["per_item"]["knowledge_closed"]["base"]) == closed and closed
    assert report["dataset"]["probe"]["closed"] == len(closed)
    for by_role in report["per_item"].values():
        assert set(by_role) == {"base", "candidate"} and by_role["base"].keys() == by_role["candidate"].keys()
    assert len(report["per_item"]["mc_accuracy"]["base"]) == 160  # every domain's items guard forgetting
    assert len(report["per_item"]["heldout_loss"]["base"]) == report["dataset"]["validation_documents"] >= 3
    assert report["merge_check"]["max_rel_diff"] < 1e-3 and report["merge_check"]["changed"] > 0
    assert report["evaluation"]["device"] == "cpu" and set(report["timings"]) >= {
        "dataset",
        "validate",
        "train",
        "merge",
        "merge_check",
        "evaluate",
    }

    # 2. test models allowed (as in this suite): the same kind of candidate becomes production, and System A
    # (the vLLM stand-in) is told to serve its adapter under the domain's name
    from pipelines.vllm_standin import VLLMStandIn

    system_a = VLLMStandIn(base="tiny-llama").start()
    monkeypatch.setenv("CBNANO_SYSTEM_A_URL", system_a.url)
    settings = allow_test_models(monkeypatch, True)
    second = retrain(settings, "catalysis", profile="tiny", month="2026-11", min_gain=-1.0, max_steps=3)
    assert second["published"] is True and second["reason"].startswith(f"published: {PRIMARY_LINE}")
    assert store.production("catalysis") == second["version"]
    assert second["system_a"] == "confirmed"  # the stand-in read the real adapter folder (config + weights)
    assert system_a.adapters == {
        "catalysis": str(store.version_dir("catalysis", second["version"]).resolve() / "adapter")
    }
    system_a.stop()
    monkeypatch.delenv("CBNANO_SYSTEM_A_URL")
    settings = allow_test_models(monkeypatch, True)

    assert set(second["metrics"]) == {"base", "candidate"}
    assert set(second["metrics"]["candidate"]) == METRICS
    assert store.history("catalysis")[-1]["reason"] == second["reason"]

    # 2b. a crash between the version's rename and the pointer move: the retry completes the promotion
    (lake.model_store / "catalysis" / "production").unlink()
    history = (lake.model_store / "catalysis" / "history.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["action"] == "promote"
    (lake.model_store / "catalysis" / "history.jsonl").write_text("\n".join(history[:-1]) + "\n")
    retry = retrain(settings, "catalysis", profile="tiny", month="2026-11", min_gain=-1.0, max_steps=3)
    assert retry["reason"].startswith("unchanged:") and retry["published"] is True
    assert store.production("catalysis") == second["version"]
    assert store.history("catalysis")[-1]["reason"].endswith("(completing an interrupted publish)")

    # 3. a bar no candidate can clear: refused against production, yet kept as a version
    third = retrain(settings, "catalysis", profile="tiny", month="2026-11", min_gain=5.0, max_steps=2)
    assert third["published"] is False and third["reason"].startswith(f"refused: {PRIMARY_LINE}")
    assert "vs production" in third["reason"] and set(third["metrics"]) == {"base", "production", "candidate"}
    assert store.production("catalysis") == second["version"]
    assert {v.version for v in store.versions("catalysis")} == {
        first["version"],
        second["version"],
        third["version"],
    }

    # 4. the second run's inputs again: that candidate exists, nothing is retrained
    same = retrain(settings, "catalysis", profile="tiny", month="2026-11", min_gain=-1.0, max_steps=3)
    assert same["reason"].startswith("unchanged:") and same["version"] == second["version"]

    # 5. sign-off required: a candidate the gate passes is registered and held; production waits for a person
    from pipelines.publishing.approval import approval_request

    monkeypatch.setenv("CBNANO_REQUIRE_APPROVAL", "1")
    settings = allow_test_models(monkeypatch, True)
    held = retrain(settings, "catalysis", profile="tiny", month="2026-11", min_gain=-1.0, max_steps=5)
    assert held["published"] is False and held["reason"].startswith(f"published: {PRIMARY_LINE}")
    assert held["reason"].endswith("; awaiting approval")
    assert store.production("catalysis") == second["version"]
    assert store.approval("catalysis", held["version"]) == "pending"
    asked = approval_request(settings, "catalysis", held["version"])
    assert asked is not None and asked["subject"] == f"Publish catalysis {held['version']}?"
    assert f"(production now: {second['version']})" in asked["body"]
    assert "published (compared with production)" in asked["body"]
    # the same inputs again: the held candidate is not retrained, and still says it waits
    again = retrain(settings, "catalysis", profile="tiny", month="2026-11", min_gain=-1.0, max_steps=5)
    assert again["reason"].startswith("unchanged:") and again["reason"].endswith("; awaiting approval")
    assert main(["models", "promote", "--domain", "catalysis", "--version", held["version"]]) == 0
    assert store.production("catalysis") == held["version"]
    assert store.approval("catalysis", held["version"]) == "approved"


def test_missing_base_fails_first_with_the_setting_named_and_nothing_written(lake, capsys):
    from pipelines.cli import main
    from pipelines.publishing.bases import BaseModelMissing

    assert lake.train_profile == "gpu_qlora" and not lake.base_model  # the scheduled default
    assert main(["retrain", "--domain", "catalysis"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "cbnano: error: no base model for profile gpu_qlora: set CBNANO_BASE_MODEL"
    )
    with pytest.raises(BaseModelMissing, match="CBNANO_BASE_MODEL='nope' is not a usable base model"):
        retrain(dataclasses.replace(lake, base_model="nope"))
    assert not (lake.data_dir / "datasets").exists() and not lake.runs_dir.exists()
    assert not lake.model_store.exists()


def test_too_small_dataset_is_not_trained_and_says_so(lake, capsys):
    """Too little data is "not trained: <reason>" (CLI exit 1, one line), never a gate decision."""
    from pipelines.cli import main
    from pipelines.training.datasets import DatasetTooSmall

    with pytest.raises(DatasetTooSmall, match="needs? at least"):
        retrain(lake, "thermal", profile="tiny", month="2026-11", max_steps=2)
    assert not (lake.home / "runs").exists()
    assert main(["retrain", "--domain", "thermal", "--profile", "tiny", "--month", "2026-11"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cbnano: not trained: thermal: ") and "refused" not in err[0]


def test_dag_reports_a_domain_it_could_not_train_and_fails_the_run(airflow_db, lake):
    import pendulum
    from domain_retraining import domain_retraining_dag as dag

    run = dag.test(
        logical_date=pendulum.datetime(2026, 12, 1, 1, tz="UTC"),
        run_conf={"domains": ["thermal"], "profile": "tiny", "max_steps": 2, "min_gain": -1.0},
    )
    tis = run.get_task_instances()
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in tis}
    assert states[("retrain_domain", 0)] == "success" and states[("report", -1)] == "failed", states
    assert str(run.state) == "failed"
    # the mapped task is named by its request's domain in the UI
    assert [ti.rendered_map_index for ti in tis if ti.task_id == "retrain_domain"] == ["thermal"]


def test_domain_retraining_dag(airflow_db, lake):
    import pendulum
    from domain_retraining import domain_retraining_dag as dag

    # the run of 2026-12-01 00:00 covers the data interval of November
    run = dag.test(
        logical_date=pendulum.datetime(2026, 12, 1, tz="UTC"),
        run_conf={"domains": ["catalysis"], "profile": "tiny", "max_steps": 3, "min_gain": -1.0},
    )
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}
    assert states[("retrain_domain", 0)] == "success", states
    assert states[("announce_catalysis", -1)] == "success"
    assert states[("announce_thermal", -1)] == "skipped"
    store = ModelStore(get_settings().model_store)
    assert (store.production("catalysis") or "").startswith("2026-11.")
    assert store.history("catalysis")[-1]["actor"].startswith("airflow:domain_retraining/")


def test_scheduled_run_without_a_base_fails_at_plan(airflow_db, lake):
    """The scheduled run uses the form's defaults: gpu_qlora on CBNANO_BASE_MODEL, which is unset here."""
    import importlib

    import domain_retraining
    import pendulum

    # a fresh DAG object: dag.test(run_conf=...) in other tests leaves its conf in the in-process DAG's params
    dag = importlib.reload(domain_retraining).domain_retraining_dag
    assert dag.params["profile"] == "gpu_qlora" and dag.params["base_model"] is None
    run = dag.test(logical_date=pendulum.datetime(2027, 1, 1, tz="UTC"))  # a date no other test's run used
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}
    assert states[("plan", -1)] == "failed" and str(run.state) == "failed", (states, run.state)
    assert not any(task == "retrain_domain" and state == "success" for (task, _), state in states.items())
    assert not (lake.data_dir / "datasets").exists() and not lake.runs_dir.exists()


def test_cli_retrain_keeps_torch_out_of_its_process(lake):
    """The process that orchestrates (an Airflow task, or the CLI) never imports torch or axolotl."""
    import os
    import subprocess
    import sys

    probe = (
        "import sys, json; from pipelines.cli import main; "
        "rc = main(['retrain', '--domain', 'catalysis', '--profile', 'tiny', '--month', '2026-11', "
        "'--max-steps', '2', '--min-gain', '5.0']); "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'axolotl', 'transformers'}); "
        "print(json.dumps({'rc': rc, 'heavy': heavy}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=dict(os.environ), timeout=900
    )
    last = proc.stdout.strip().splitlines()
    result = json.loads(last[-1])
    summary = json.loads(last[-2])
    assert result == {"rc": 0, "heavy": []}, proc.stderr[-2000:]
    assert summary["published"] is False and summary["reason"].startswith("refused:")
    assert set(summary) == {"domain", "version", "published", "reason", "metrics"}


def test_domain_retraining_dry_run_builds_the_dataset_only(airflow_db, lake):
    import pendulum
    from domain_retraining import domain_retraining_dag as dag

    run = dag.test(
        logical_date=pendulum.datetime(2026, 12, 2, tz="UTC"),
        run_conf={"domains": ["catalysis"], "profile": "tiny", "dry_run": True, "month": "2026-11"},
    )
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}
    assert states[("retrain_domain", 0)] == "skipped" and states[("announce_catalysis", -1)] == "skipped"
    assert (lake.data_dir / "datasets" / "catalysis" / "2026-11" / "dataset_card.json").is_file()
    assert not (lake.home / "runs").exists()
