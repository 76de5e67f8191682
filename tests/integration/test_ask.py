"""`cbnano ask`: retrieval from real Milvus Lite, then System A (the vLLM stand-in) or a local model."""

import json
from pathlib import Path

import pytest

from pipelines.embedding.minilm import MINILM, get_embedder
from pipelines.ingestion.indexing import index_documents
from pipelines.publishing.model_store import ModelStore
from pipelines.publishing.serving import hand_off
from pipelines.retrieval.golden import golden_path, load_corpus
from pipelines.settings import get_settings, reset_settings_cache
from pipelines.vectorstore.milvus import MilvusStore
from pipelines.vllm_standin import VLLMStandIn

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Which ligand keeps CsPbI3 in its black phase?"


@pytest.fixture
def corpus(cbnano_env, monkeypatch):
    monkeypatch.setenv("CBNANO_TRAIN_PYTHON", str(ROOT / ".venv-train" / "bin" / "python"))
    reset_settings_cache()
    with MilvusStore.from_settings(get_settings()) as store:
        store.ensure_collection(384)
        index_documents(load_corpus(golden_path("corpus.jsonl")), store, lambda: get_embedder(MINILM), MINILM)
    return get_settings()


def fake_version(store, tmp_path, domain, version):
    content = tmp_path / version
    (content / "adapter").mkdir(parents=True)
    (content / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "smollm2", "r": 16})
    )
    (content / "adapter" / "adapter_model.safetensors").write_bytes(b"w")
    store.publish(domain, version, content, {}, promote=True)


def test_ask_system_a_with_numbered_sources(corpus, tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    with VLLMStandIn(base="smollm2") as srv:
        monkeypatch.setenv("CBNANO_SYSTEM_A_URL", srv.url)
        monkeypatch.setenv("CBNANO_BASE_MODEL", "smollm2")
        reset_settings_cache()
        fake_version(ModelStore(corpus.model_store), tmp_path, "materials", "m1")
        assert hand_off(get_settings(), "materials")["state"] == "confirmed"
        assert main(["ask", QUESTION, "--domain", "materials", "--top-k", "3", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["answer"] == "Stand-in answer from materials [1]."
        assert out["sources"][0] == {
            "doc_id": "2501.07731",
            "title": "Stabilizing black-phase CsPbI3 with surface ligands",
            "url": "https://arxiv.org/abs/2501.07731",
        }
        assert len(out["sources"]) == 3
        [(_, _, body)] = [r for r in srv.requests if r[1] == "/v1/chat/completions"]
        assert body["model"] == "materials"
        user = body["messages"][-1]["content"]
        assert user.startswith("Sources:\n\n[1] Stabilizing black-phase CsPbI3") and "[3] " in user
        assert user.endswith(f"Question: {QUESTION}") and "cite" in body["messages"][0]["content"]
        # no --domain: the served base answers
        assert main(["ask", QUESTION]) == 0
        text = capsys.readouterr().out
        assert text.startswith("Stand-in answer from smollm2 [1].") and "[1] Stabilizing black-phase" in text
        # a domain System A does not serve: one line, exit 1
        assert main(["ask", QUESTION, "--domain", "thermal"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("cbnano: error: System A at") and "does not serve 'thermal'" in err
        assert "\n" not in err
    assert main(["ask", QUESTION, "--domain", "materials"]) == 1  # System A down
    err = capsys.readouterr().err.strip()
    assert "did not answer POST /v1/chat/completions" in err and "\n" not in err
    assert main(["ask", QUESTION, "--domain", "geology"]) == 1
    assert "unknown domain 'geology'" in capsys.readouterr().err


def test_ask_locally_without_system_a_on_the_tiny_base(corpus, monkeypatch, capsys):
    from pipelines.cli import main
    from pipelines.training.base_models import resolve_base

    assert main(["ask", QUESTION, "--domain", "catalysis"]) == 1  # no production, no base: says so
    assert "catalysis has no production model and CBNANO_BASE_MODEL is not set" in capsys.readouterr().err
    base = resolve_base(corpus, None)  # the random tiny Llama: a real model, nonsense answers
    from pipelines.retrieval.ask import ask

    # CBNANO_BASE_MODEL unset (a newcomer after `make demo`): the one imported base answers, and says so
    fallback = ask(get_settings(), QUESTION, max_tokens=4)
    assert fallback["model"] == f"base {base.name} (CBNANO_BASE_MODEL unset: the only imported base)"
    monkeypatch.setenv("CBNANO_BASE_MODEL", base.name)
    reset_settings_cache()
    assert main(["ask", QUESTION, "--domain", "catalysis", "--json", "--max-tokens", "12"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out["answer"], str) and out["sources"][0]["doc_id"] == "2501.07731"
    local = ask(get_settings(), QUESTION, max_tokens=8)
    assert local["answered_by"] == "local" and local["model"] == f"base {base.name}"
    assert 0 < local["new_tokens"] <= 8 and local["prompt_tokens"] > 50  # the sources made it into the prompt
    assert main(["ask", QUESTION, "--max-tokens", "8"]) == 0
    shown = capsys.readouterr().out
    assert f"-- base {base.name} (local, CPU); sources:" in shown
    # the random model cites nothing: the reader is told, and sees what the sources say
    assert local["cited"] == [] and "-- the answer cites none of the sources; what they say:" in shown
    assert shown.rstrip().splitlines()[-len(local["sources"])].startswith("[1] ")


def test_serving_handoff_dag_reads_the_connection(airflow_db, cbnano_env, tmp_path, monkeypatch):
    import sys

    import pendulum

    sys.path.insert(0, str(ROOT / "dags"))
    from serving_handoff import serving_handoff_dag as dag

    store = ModelStore(cbnano_env.model_store)
    fake_version(store, tmp_path, "catalysis", "c1")
    with VLLMStandIn(base="smollm2", token="conn-token") as srv:
        # no CBNANO_SYSTEM_A_URL: URL and token come from the Airflow Connection, as in the lab
        monkeypatch.setenv(
            "AIRFLOW_CONN_CBNANO_SYSTEM_A",
            json.dumps({"conn_type": "http", "host": srv.url, "password": "conn-token"}),
        )
        run = dag.test(
            logical_date=pendulum.datetime(2026, 12, 2, tz="UTC"), run_conf={"domains": ["catalysis"]}
        )
        states = {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}
        assert states == {("domains", -1): "success", ("hand_off", 0): "success"}, states
        assert srv.adapters == {"catalysis": str(store.version_dir("catalysis", "c1").resolve() / "adapter")}
    state = json.loads((cbnano_env.model_store / "catalysis" / "serving.json").read_text())
    assert state["state"] == "confirmed" and state["version"] == "c1"
