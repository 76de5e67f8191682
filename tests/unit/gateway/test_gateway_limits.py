"""Sharing System A: per-key limits (429 with Retry-After), priority classes when System A is busy, and the
cache of deterministic answers, invalidated by a promote; against a scripted System A."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from system_a_script import scripted_system_a

from pipelines.gateway.app import create_app
from pipelines.gateway.limits import Limiter, MemoryCache, Policy, PriorityGate
from pipelines.gateway.shapes import GatewayError
from pipelines.ops.traces import GatewayStore
from pipelines.publishing.model_store import ModelStore
from pipelines.publishing.serving import served_adapter
from pipelines.settings import load_settings

pytestmark = pytest.mark.unit
CHAT = {"model": "general", "messages": [{"role": "user", "content": "Which support?"}]}


class SystemAStandIn:
    """Answers every completion with the last user message echoed and 9 tokens used; ``adapters``: the
    LoRA adapters it says it serves (name -> path); ``hold``: completions wait for it to be set."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.adapters: dict[str, str] = {}
        self.hold: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            data = [{"id": "smollm2", "object": "model", "root": "smollm2", "parent": None}]
            data += [
                {"id": n, "object": "model", "root": p, "parent": "smollm2"} for n, p in self.adapters.items()
            ]
            return httpx.Response(200, json={"object": "list", "data": data})
        body = json.loads(request.content)
        said = body["messages"][-1]["content"]
        self.asked.append(said)
        if self.hold is not None:
            await self.hold.wait()
        return httpx.Response(200, json={
            "id": "cmpl", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo: {said}"}}],
            "usage": {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9},
        })  # fmt: skip


def app_with(settings, store, system_a):
    return create_app(settings, store, system_a=scripted_system_a(system_a))


def test_past_a_keys_limits_the_answer_is_429_with_retry_after(cbnano_env, monkeypatch):
    monkeypatch.setenv("CBNANO_GATEWAY_RPM", "3")
    settings = load_settings()
    store = GatewayStore.from_settings(settings)
    alice, bob = store.add_key("alice"), store.add_key("bob")
    store.set_limits("bob", tokens_per_day=10)
    with TestClient(app_with(settings, store, SystemAStandIn())) as client:
        as_alice = {"Authorization": f"Bearer {alice}"}
        assert [client.get("/v1/models", headers=as_alice).status_code for _ in range(3)] == [200] * 3
        refused = client.get("/v1/models", headers=as_alice)
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
        assert (
            refused.json()["error"]["code"] == "requests" and "limit 3" in refused.json()["error"]["message"]
        )
        as_bob = {"Authorization": f"Bearer {bob}"}
        # 9 tokens a chat against bob's 10 a day: the second chat is allowed (9 < 10), the third is not
        assert [
            client.post("/v1/chat/completions", json=CHAT, headers=as_bob).status_code for _ in range(3)
        ] == [
            200,
            200,
            429,
        ]
        day = client.get("/v1/models", headers=as_bob)
        assert day.status_code == 429 and day.json()["error"]["code"] == "tokens"
        assert 0 < int(day.headers["Retry-After"]) <= 24 * 3600
    store.flush()
    assert sorted(t["status"] for t in store.traces() if t["user"] == "bob") == [200, 200, 429, 429]


def test_a_restarted_gateway_counts_the_days_tokens_from_the_traces(cbnano_env):
    store = GatewayStore.from_settings(cbnano_env)
    store.add_key("carol")
    first = Limiter(store, clock=lambda: 1_796_636_000.0)  # a fixed instant: 2026-12-07 09:33 UTC
    policy = Policy(rpm=100, tokens_per_day=20)
    from pipelines.ops.traces import Trace

    at = "2026-12-07T01:00:00+00:00"  # earlier that UTC day
    store.record(Trace(user="carol", endpoint="chat", model="general", status=200, latency_ms=1.0,
                       tokens_in=15, tokens_out=6, at=at))  # fmt: skip
    store.record(Trace(user="carol", endpoint="chat", model="general", status=200, latency_ms=1.0,
                       tokens_in=500, at="2026-12-06T23:59:00+00:00"))  # fmt: skip  # the day before: not counted
    with pytest.raises(GatewayError) as exc:
        first.admit("carol", policy)
    assert exc.value.status == 429 and "21 of 20 tokens" in exc.value.message


def test_when_system_a_is_busy_interactive_users_go_before_batch_ones(cbnano_env):
    settings = cbnano_env
    store = GatewayStore.from_settings(settings)
    alice, robot = store.add_key("alice"), store.add_key("nightly-robot")
    store.set_limits("nightly-robot", priority="batch")
    system_a = SystemAStandIn()
    app = app_with(settings, store, system_a)
    gate: PriorityGate = app.state.gateway.queue
    gate.limit = 1  # one request at System A at a time: the rest queue

    async def scenario() -> list[int]:
        system_a.hold = asyncio.Event()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:

            def ask(key: str, text: str) -> Any:
                body = {**CHAT, "messages": [{"role": "user", "content": text}]}
                return asyncio.create_task(
                    client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
                )

            async def until(cond: Any) -> None:
                for _ in range(2000):
                    if cond():
                        return
                    await asyncio.sleep(0.01)
                raise AssertionError("the requests never queued")

            first = ask(alice, "first")
            await until(lambda: system_a.asked == ["first"])
            batch = ask(robot, "batch")  # arrives first ...
            await until(lambda: gate.waiting == 1)
            interactive = ask(alice, "interactive")  # ... but waits behind an interactive request
            await until(lambda: gate.waiting == 2)
            system_a.hold.set()
            return [(await t).status_code for t in (first, batch, interactive)]

    assert asyncio.run(scenario()) == [200, 200, 200]
    assert system_a.asked == ["first", "interactive", "batch"]
    assert gate.busy == 0 and gate.waiting == 0  # every place given back once


def _publish(store: ModelStore, root: Path, version: str) -> None:
    content = root / version
    (content / "adapter").mkdir(parents=True)
    (content / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "smollm2"})
    )
    (content / "adapter" / "adapter_model.safetensors").write_bytes(b"w")
    store.publish("catalysis", version, content, {}, promote=True)


def test_a_deterministic_answer_comes_from_the_cache_until_production_moves(cbnano_env, tmp_path):
    settings = cbnano_env
    models = ModelStore(settings.model_store)
    _publish(models, tmp_path, "c1")
    system_a = SystemAStandIn()
    system_a.adapters["catalysis"] = served_adapter(settings, "catalysis").path
    store = GatewayStore.from_settings(settings)
    app = app_with(settings, store, system_a)
    app.state.gateway.backends.served_ttl_s = 0  # read System A's model list on every request
    ask = {"model": "catalysis", "messages": [{"role": "user", "content": "TOF?"}], "temperature": 0}
    with TestClient(app, headers={"Authorization": f"Bearer {store.add_key('alice')}"}) as client:
        one = client.post("/v1/chat/completions", json=ask).json()
        two = client.post("/v1/chat/completions", json=ask).json()
        assert system_a.asked == ["TOF?"]  # the second answer came from the cache
        assert two["choices"] == one["choices"] and two["id"] != one["id"]  # its own id: feedback per request
        client.post("/v1/chat/completions", json={**ask, "temperature": 0.7})  # not deterministic: no cache
        assert system_a.asked == ["TOF?", "TOF?"]
        _publish(models, tmp_path, "c2")  # production moves, and System A is handed the new adapter
        system_a.adapters["catalysis"] = served_adapter(settings, "catalysis").path
        client.post("/v1/chat/completions", json=ask)
        assert system_a.asked == ["TOF?", "TOF?", "TOF?"]  # the promote's version: a new key, a miss
        metrics = client.get("/metrics").text
    assert 'cbnano_gateway_cache_total{result="hit"} 1.0' in metrics
    assert 'cbnano_gateway_cache_total{result="miss"} 2.0' in metrics
    store.flush()
    hit = [t for t in store.traces() if t["id"] == two["id"]]
    assert hit and hit[0]["status"] == 200 and hit[0]["tokens_in"] is None  # a hit costs no tokens


def test_the_memory_cache_forgets_the_least_recently_used_and_the_expired():
    now = [0.0]
    cache = MemoryCache(size=2, ttl_s=10, clock=lambda: now[0])

    async def run() -> list[Any]:
        await cache.put("a", {"v": 1})
        await cache.put("b", {"v": 2})
        await cache.get("a")  # a is now the most recently used
        await cache.put("c", {"v": 3})  # b goes
        seen = [await cache.get(k) for k in ("a", "b", "c")]
        now[0] = 11.0
        return [*seen, await cache.get("a")]

    assert asyncio.run(run()) == [{"v": 1}, None, {"v": 3}, None]
