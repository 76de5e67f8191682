"""`cbnano gateway keys|traces` and the gateway's start-up rules, on the SQLite trace store."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import main
from pipelines.ops.traces import GatewayStore, Trace, key_hash
from pipelines.settings import reset_settings_cache

pytestmark = pytest.mark.unit


def test_keys_add_prints_the_key_alone_on_the_last_line_and_stores_only_its_hash(cbnano_env, capsys):
    assert main(["gateway", "keys", "add", "alice"]) == 0
    out = capsys.readouterr().out
    key = out.strip().splitlines()[-1]
    assert key.startswith("cbn_") and len(key) > 40
    db = (cbnano_env.home / "gateway.db").read_bytes()
    assert key.encode() not in db and key_hash(key).encode() in db
    assert main(["gateway", "keys", "add", "alice"]) == 2  # one key per user: revoke first
    capsys.readouterr()
    assert main(["gateway", "keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "never" in listing and key not in listing
    assert GatewayStore.from_settings(cbnano_env).user_for(key) == "alice"
    assert main(["gateway", "keys", "revoke", "alice"]) == 0
    assert GatewayStore.from_settings(cbnano_env).user_for(key) is None
    assert main(["gateway", "keys", "revoke", "alice"]) == 2
    assert "alice has no key" in capsys.readouterr().err


def test_traces_print_and_filter_by_day(cbnano_env, capsys):
    store = GatewayStore.from_settings(cbnano_env)
    store.record(Trace(user="alice", endpoint="chat", model="catalysis+rag", status=200, latency_ms=12.5,
                       tokens_in=40, tokens_out=6, sources=["2611.08115"], at="2026-11-30T10:00:00+00:00"))  # fmt: skip
    store.record(Trace(user="bob", endpoint="embeddings", model="all-MiniLM-L6-v2", status=200, latency_ms=3.0,
                       at="2026-12-01T09:00:00+00:00"))  # fmt: skip
    store.flush()  # written by the store's background writer; the CLI below is another reader
    assert main(["gateway", "traces", "--since", "2026-12-01", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["user"] for r in rows] == ["bob"]
    assert main(["gateway", "traces"]) == 0
    text = capsys.readouterr().out
    assert "catalysis+rag" in text and "sources=2611.08115" in text
    assert main(["gateway", "traces", "--since", "yesterday"]) == 2


def test_the_gateway_refuses_to_start_without_a_key_or_system_a(cbnano_env, monkeypatch, capsys):
    assert main(["gateway", "--port", "0"]) == 2
    assert "CBNANO_SYSTEM_A_URL" in capsys.readouterr().err
    monkeypatch.setenv("CBNANO_SYSTEM_A_URL", "http://127.0.0.1:9")
    reset_settings_cache()
    assert main(["gateway", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "no user has a key" in err and "--no-auth" in err


def test_a_bad_user_name_is_refused(cbnano_env, capsys):
    assert main(["gateway", "keys", "add", " spaced "]) == 2
    assert main(["gateway", "keys", "add"]) == 2


def _rated(store: GatewayStore, question: str, answer: str, rating: int, comment: str = "") -> str:
    t = Trace(user="alice", endpoint="chat", model="catalysis+rag", status=200, latency_ms=5.0,
              sources=["2611.08115"], question=question, answer=answer)  # fmt: skip
    store.record(t)
    assert store.feedback(t.id, "alice", rating, comment)
    return t.id


def test_positively_rated_rag_answers_become_rows_only_when_asked(cbnano_env, monkeypatch):
    from pipelines.training.dataset_step import rated_answers
    from pipelines.training.datasets import feedback_examples

    store = GatewayStore.from_settings(cbnano_env)
    good = _rated(store, "Which support resists coke?", "Ceria [1], by its oxygen storage [1, 2].", 1)
    _rated(store, "Which metal?", "Gold [2].", -1, "wrong: nickel")
    month = store.rated("catalysis", 1)[0]["at"][:7]
    rows = rated_answers(cbnano_env, "catalysis", month)
    assert [r["id"] for r in rows] == [good] and rated_answers(cbnano_env, "catalysis", "1999-01") == []
    [ex] = feedback_examples(rows)
    assert (ex.instruction, ex.output, ex.source, ex.kind) == (
        "Which support resists coke?",
        "Ceria, by its oxygen storage.",
        "feedback",
        "feedback",
    )
    assert cbnano_env.feedback_rows is False  # off by default
    monkeypatch.setenv("CBNANO_FEEDBACK_ROWS", "1")
    reset_settings_cache()
    from pipelines.settings import get_settings

    assert get_settings().feedback_rows is True


def test_negatively_rated_answers_are_on_the_registry_page(cbnano_env, tmp_path):
    from pipelines.reports import model_registry, render_registry

    content = tmp_path / "c"
    (content / "adapter").mkdir(parents=True)
    (content / "adapter" / "adapter_model.safetensors").write_text("w")
    from pipelines.publishing.model_store import ModelStore

    ModelStore(cbnano_env.model_store).publish("catalysis", "v1", content, {})
    _rated(GatewayStore.from_settings(cbnano_env), "Which metal <b>?</b>", "Gold [2].", -1, "wrong: nickel")
    registry = model_registry(cbnano_env)
    assert registry[0]["flagged"][0]["comment"] == "wrong: nickel"
    html = render_registry(registry, [])
    assert "Answers rated -1 in the gateway (catalysis+rag)" in html and "wrong: nickel" in html
    assert "<b>?</b>" not in html and "&lt;b&gt;" in html  # escaped


def test_keys_limit_sets_a_users_own_limits_and_list_shows_them(cbnano_env, capsys):
    assert main(["gateway", "keys", "add", "robot"]) == 0
    assert main(["gateway", "keys", "limit", "robot", "--rpm", "5", "--priority", "batch"]) == 0
    capsys.readouterr()
    assert main(["gateway", "keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert "5/min" in listing and "2,000,000 tokens/day" in listing and "batch" in listing
    assert GatewayStore.from_settings(cbnano_env).limits()["robot"] == {
        "rpm": 5,
        "tokens_per_day": None,
        "priority": "batch",
    }
    assert main(["gateway", "keys", "limit", "robot"]) == 2  # nothing to set
    assert main(["gateway", "keys", "limit", "nobody", "--rpm", "3"]) == 2
    assert "nobody has no key" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["gateway", "keys", "limit", "robot", "--rpm", "0"])
    assert exc.value.code == 2


def test_a_gateway_db_that_is_not_a_url_is_one_line_exit_2(cbnano_env, monkeypatch, capsys):
    from pipelines.settings import reset_settings_cache

    monkeypatch.setenv("CBNANO_GATEWAY_DB", "not a url")
    reset_settings_cache()
    for argv in (["gateway", "keys", "list"], ["gateway", "--port", "0"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "CBNANO_GATEWAY_DB is not a database URL" in err[0], err


def test_only_the_user_who_was_answered_may_rate_the_answer(cbnano_env):
    store = GatewayStore.from_settings(cbnano_env)
    mine = Trace(user="alice", endpoint="chat", model="catalysis+rag", status=200, latency_ms=1.0)
    store.record(mine)
    assert store.feedback(mine.id, "mallory", -1, "overwrite") is False  # not mallory's answer
    assert store.feedback(mine.id, "alice", 1, "right paper") is True
    assert store.feedback(mine.id, "mallory", -1) is False  # nor can mallory replace alice's rating
    [row] = store.traces()
    assert (row["rating"], row["comment"]) == (1, "right paper")


def test_a_key_in_a_url_never_reaches_the_access_log():
    from pipelines.retrieval.service import redact_query

    key = "cbn_" + "A1b2C3d4" * 5
    line = redact_query(f"/v1/{key}/models?q=ceria&apikey2={key}&note={key}")
    assert key not in line and line.startswith("/v1/cbn_***/models?q=ceria")
