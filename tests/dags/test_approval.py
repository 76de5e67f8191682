"""Sign-off in Airflow: with CBNANO_REQUIRE_APPROVAL a passed candidate waits in `approve_<domain>` until a
person answers through Airflow's REST API (what the UI's "Required actions" page calls); approval moves
production, rejection records the reason. The run is a real `dag.test()` of domain_retraining; only the
training is replaced by a candidate registered the way `retrain` registers a passed one."""

import json
import threading
import time

import pytest

from pipelines.publishing.model_store import ModelStore

pytestmark = pytest.mark.dags
PASSWORD = "approve-me"


def fake_retrain(settings, domain, **kwargs):
    """What retrain leaves behind for a candidate the gate passed while approval is required."""
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


def answer(choice, reason, found):
    """Wait for the approval task to park, read its question and answer it through the REST API."""
    from airflow.api_fastapi.app import create_app
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from fastapi.testclient import TestClient

    deadline = time.monotonic() + 600
    ti = None
    while time.monotonic() < deadline and ti is None:
        with create_session() as session:
            ti = (
                session.query(TaskInstance)
                .filter_by(dag_id="domain_retraining", task_id="approve_catalysis", state="awaiting_input")
                .first()
            )
            key = (ti.dag_id, ti.run_id) if ti else None
        time.sleep(0.5)
    if key is None:
        found["error"] = "approve_catalysis never waited for input"
        return
    client = TestClient(create_app(apps="core"))
    token = client.post("/auth/token", json={"username": "alice", "password": PASSWORD}).json()[
        "access_token"
    ]
    auth = {"Authorization": f"Bearer {token}"}
    url = f"/api/v2/dags/{key[0]}/dagRuns/{key[1]}/taskInstances/approve_catalysis/-1/hitlDetails"
    found["question"] = client.get(url, headers=auth).json()
    reply = client.patch(
        url, headers=auth, json={"chosen_options": [choice], "params_input": {"reason": reason}}
    )
    found["reply"] = reply.status_code


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
    found: dict = {}
    responder = threading.Thread(target=answer, args=(choice, "checked the held-out answers", found))
    responder.start()
    dag = importlib.reload(domain_retraining).domain_retraining_dag
    day = {"Approve": 2, "Reject": 3}[choice]  # a run of its own per answer
    run = dag.test(
        logical_date=pendulum.datetime(2026, 12, day, tz="UTC"),
        run_conf={"domains": ["catalysis"], "profile": "tiny", "month": "2026-11"},
    )
    responder.join(timeout=60)
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
