"""A person answering an approval in Airflow, as a process of its own (so nothing it imports or locks is shared
with the `dag.test()` it answers): waits for the task to park in ``awaiting_input``, reads the question and
answers it through Airflow's REST API (the core API app, in this process, on the same metadata DB).

    python hitl_responder.py DAG_ID TASK_ID CHOICE REASON USER PASSWORD

Prints one JSON line: the question as the API shows it and the answer's HTTP status, or ``error``. When it
cannot answer, it fails the waiting task so that the run it belongs to ends instead of waiting for ever.
"""

from __future__ import annotations

import json
import sys
import time


def main(dag_id: str, task_id: str, choice: str, reason: str, user: str, password: str) -> int:
    from airflow.api_fastapi.app import create_app
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from fastapi.testclient import TestClient

    def parked() -> tuple[str, str] | None:
        with create_session() as session:  # earlier runs of the same DAG may hold finished ones
            tis = session.query(TaskInstance).filter_by(dag_id=dag_id, task_id=task_id).all()
            waiting = [ti for ti in tis if str(ti.state) == "awaiting_input"]
            return (waiting[0].run_id, "awaiting_input") if waiting else None

    deadline = time.monotonic() + 600
    seen = parked()
    while time.monotonic() < deadline and (seen is None or seen[1] != "awaiting_input"):
        time.sleep(0.5)
        seen = parked()
    out: dict = {}
    try:
        if seen is None or seen[1] != "awaiting_input":
            raise RuntimeError(f"{task_id} never waited for input (last seen: {seen})")
        client = TestClient(create_app(apps="core"))
        token = client.post("/auth/token", json={"username": user, "password": password}).json()
        auth = {"Authorization": f"Bearer {token['access_token']}"}
        url = f"/api/v2/dags/{dag_id}/dagRuns/{seen[0]}/taskInstances/{task_id}/-1/hitlDetails"
        out["question"] = client.get(url, headers=auth).json()
        body = {"chosen_options": [choice], "params_input": {"reason": reason}}
        out["reply"] = client.patch(url, headers=auth, json=body).status_code
    except Exception as exc:  # noqa: BLE001 - reported, and the waiting run released
        out["error"] = f"{type(exc).__name__}: {exc}"
        with create_session() as session:
            for ti in session.query(TaskInstance).filter_by(dag_id=dag_id, task_id=task_id):
                if str(ti.state) not in ("success", "skipped", "failed"):
                    ti.state = "failed"
    print(json.dumps(out), flush=True)
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:7]))
