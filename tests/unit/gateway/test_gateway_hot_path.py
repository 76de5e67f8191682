"""What every request pays for, cut without losing behaviour (issue 28's speed item): the key is checked in
the event loop where the store can (and a key revoked by another process is refused at once), many requests
that find the model list due read it once, and the day's start for the token limit is the UTC day's."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from system_a_script import scripted_system_a

from pipelines.gateway.app import create_app
from pipelines.gateway.backends import Backends
from pipelines.gateway.limits import Limiter, Policy
from pipelines.gateway.shapes import GatewayError
from pipelines.ops.traces import GatewayStore

pytestmark = pytest.mark.unit
MODELS = {"object": "list", "data": [{"id": "smollm2", "object": "model", "root": "smollm2", "parent": None}]}


def test_a_key_is_checked_at_once_and_a_revocation_elsewhere_counts_at_once(cbnano_env):
    store = GatewayStore.from_settings(cbnano_env)
    key = store.add_key("alice")
    assert store.user_for_at_once(key) == (False, None)  # alice's last use is due: a worker thread writes it
    assert store.user_for(key) == "alice"
    assert store.user_for_at_once(key) == (True, "alice")
    assert store.user_for_at_once("cbn_not-a-key") == (True, None)
    GatewayStore.from_settings(cbnano_env).revoke("alice")  # another process's store
    assert store.user_for_at_once(key) == (True, None)


def test_a_moved_or_replaced_key_database_is_noticed(cbnano_env):
    store = GatewayStore.from_settings(cbnano_env)
    key = store.add_key("alice")
    store.user_for(key)
    db = cbnano_env.home / "gateway.db"
    db.rename(db.with_suffix(".moved"))
    assert store.user_for_at_once(key) == (False, None)  # the worker thread's check says "is gone"
    shutil.copy(db.with_suffix(".moved"), db)  # a restored copy: another file at the same path
    GatewayStore.from_settings(cbnano_env).revoke("alice")  # in the restored file
    assert store.user_for_at_once(key) == (True, None)
    assert GatewayStore("sqlite:///:memory:").user_for_at_once(key) == (
        False,
        None,
    )  # no file: always a thread


def test_requests_with_a_known_key_do_not_wait_for_a_worker_thread(cbnano_env, monkeypatch):
    store = GatewayStore.from_settings(cbnano_env)
    key = store.add_key("alice")
    slow: list[str] = []
    checked = store.user_for
    monkeypatch.setattr(store, "user_for", lambda k: slow.append(k) or checked(k))

    def system_a(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=MODELS)

    app = create_app(cbnano_env, store, system_a=scripted_system_a(system_a))
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        assert [client.get("/v1/models").status_code for _ in range(5)] == [200] * 5
        GatewayStore.from_settings(cbnano_env).revoke("alice")
        assert client.get("/v1/models").status_code == 401
    assert len(slow) == 1  # the first request wrote alice's last use; the other five were checked at once


def test_requests_that_find_the_model_list_due_read_it_once(cbnano_env):
    calls: list[str] = []

    async def system_a(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        await asyncio.sleep(0.05)  # System A slow to list its models
        return httpx.Response(200, json=MODELS)

    backends = Backends(cbnano_env, system_a=scripted_system_a(system_a))

    async def many() -> list[dict[str, str]]:
        first = await asyncio.gather(*(backends.served() for _ in range(16)))
        backends._served_at -= backends.served_ttl_s  # due again
        return first + list(await asyncio.gather(*(backends.served() for _ in range(16))))

    answers = asyncio.run(many())
    assert calls == ["/v1/models", "/v1/models"] and all(a == {"general": "smollm2"} for a in answers)


def test_a_failed_model_list_reaches_every_waiter_and_the_next_request_tries_again(cbnano_env):
    down = [True]

    def system_a(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502 if down[0] else 200, json=MODELS)

    backends = Backends(cbnano_env, system_a=scripted_system_a(system_a))

    async def twice() -> tuple[list[Any], dict[str, str]]:
        failed = await asyncio.gather(*(backends.served() for _ in range(4)), return_exceptions=True)
        down[0] = False
        return failed, await backends.served()

    failed, served = asyncio.run(twice())
    assert all(isinstance(f, GatewayError) and f.status == 503 for f in failed)
    assert served == {"general": "smollm2"}


@pytest.mark.parametrize(
    ("now", "day", "retry_after"),
    [
        (1796601599.5, "2026-12-06T00:00:00+00:00", "1"),  # half a second before midnight, UTC
        (1796601600.0, "2026-12-07T00:00:00+00:00", "86400"),
        (1796645000.25, "2026-12-07T00:00:00+00:00", "43000"),
    ],
)
def test_the_token_day_is_the_utc_day(now, day, retry_after):
    asked: list[str] = []

    class Ledger:
        def tokens_since(self, user: str, since: str) -> int:
            asked.append(since)
            return 100

    limiter = Limiter(Ledger(), clock=lambda: now)
    with pytest.raises(GatewayError) as refused:
        limiter.admit("alice", Policy(rpm=10, tokens_per_day=100, priority="interactive"))
    assert asked == [day] and refused.value.headers == {"Retry-After": retry_after}


def test_the_trace_writer_writes_a_backlog_of_many_batches(cbnano_env):
    from pipelines.ops.traces import TRACE_BATCH, Trace

    store = GatewayStore.from_settings(cbnano_env)
    sent = [
        Trace(user="alice", endpoint="chat", model="general", status=200, latency_ms=1.0) for _ in range(700)
    ]
    for t in sent:
        store.record(t)
    store.close()  # writes what is queued, then stops the writer
    written = GatewayStore.from_settings(cbnano_env).traces(limit=5000)
    assert len(sent) > 3 * TRACE_BATCH and sorted(r["id"] for r in written) == sorted(t.id for t in sent)
