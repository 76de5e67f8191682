"""Sign-off in Airflow: with CBNANO_REQUIRE_APPROVAL a passed candidate waits in `approve_<domain>` until a
person answers through Airflow's REST API (what the UI's "Required actions" page calls); approval moves
production, rejection records the reason. The run is a real `dag.test()` of domain_retraining; only the
training is replaced by a candidate registered the way `retrain` registers a passed one."""

import faulthandler
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.publishing.model_store import ModelStore

pytestmark = pytest.mark.dags
PASSWORD = "approve-me"
RESPONDER = Path(__file__).with_name("hitl_responder.py")


def fake_retrain(settings, request, **kwargs):
    """What retrain leaves behind for a candidate the gate passed while approval is required."""
    domain = request.domain
    store = ModelStore(settings.model_store)
    content = settings.runs_dir / domain / "2026-11.cafe" / "out"
    content.mkdir(parents=True, exist_ok=True)
    (content / "adapter_config.json").write_text("{}")
    gate = {
        "publish": True,
        "reason": "passed: knowledge_closed_doc +0.080 (95% CI +0.023..+0.137, n=19 documents)",
        "lines": ["passed: knowledge_closed_doc +0.080 (95% CI +0.023..+0.137)", " general_loss -0.01 ok"],
    }
    store.publish(domain, "2026-11.cafe", content, {"gate": gate, "approval": "required"}, promote=False)
    return {
        "domain": domain,
        "version": "2026-11.cafe",
        "published": False,
        "reason": gate["reason"] + "; awaiting approval",
        "metrics": {},
    }


@pytest.mark.parametrize("choice", ["Approve", "Reject"])
def test_a_passed_candidate_waits_for_a_person(choice, airflow_db, cbnano_env, monkeypatch, tmp_path):
    import importlib

    import domain_retraining
    import pendulum

    (tmp_path / "passwords.json").write_text(json.dumps({"alice": PASSWORD}))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "alice:admin")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(tmp_path / "passwords.json"))
    monkeypatch.setenv("CBNANO_REQUIRE_APPROVAL", "1")
    monkeypatch.setattr("pipelines.training.retrain.retrain", fake_retrain)
    from pipelines.settings import get_settings, reset_settings_cache

    reset_settings_cache()
    # the person: a process of its own, answering through the REST API once the task waits
    responder = subprocess.Popen(
        [sys.executable, str(RESPONDER), "domain_retraining", "approve_catalysis", choice]
        + ["checked the held-out answers", "alice", PASSWORD],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    dag = importlib.reload(domain_retraining).domain_retraining_dag
    day = {"Approve": 2, "Reject": 3}[choice]  # a run of its own per answer
    faulthandler.dump_traceback_later(900, exit=True)  # a run that never ends must not hang the suite
    try:
        run = dag.test(
            logical_date=pendulum.datetime(2026, 12, day, tz="UTC"),
            run_conf={"domains": ["catalysis"], "profile": "tiny", "month": "2026-11"},
        )
    finally:
        faulthandler.cancel_dump_traceback_later()
    out, _ = responder.communicate(timeout=120)
    found = json.loads(out.strip().splitlines()[-1])
    assert "error" not in found and found["reply"] == 200, found
    question = found["question"]
    assert question["subject"] == "Publish catalysis 2026-11.cafe?"
    assert "+0.080 (95% CI +0.023..+0.137)" in question["body"] and "production now: none" in question["body"]
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}
    store = ModelStore(get_settings().model_store)
    last = store.history("catalysis")[-1]
    assert last["actor"] == "airflow-user:alice" and last["version"] == "2026-11.cafe"
    if choice == "Approve":
        assert store.production("catalysis") == "2026-11.cafe" and last["action"] == "promote"
        assert last["reason"] == "approved: checked the held-out answers"
        assert states[("announce_catalysis", -1)] == "success"
        assert store.approval("catalysis", "2026-11.cafe") == "approved"
    else:
        assert store.production("catalysis") is None and last["action"] == "reject"
        assert last["reason"] == "checked the held-out answers"
        assert states[("announce_catalysis", -1)] == "skipped"
        assert store.approval("catalysis", "2026-11.cafe") == "rejected"
    assert states[("approve_catalysis", -1)] == "success" and states[("approve_thermal", -1)] == "skipped"
    assert str(run.state) == "success", states
