"""`cbnano gateway keys|traces` and the gateway's start-up rules, on the SQLite trace store."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import main
from pipelines.gateway.store import GatewayStore, Trace, key_hash
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
