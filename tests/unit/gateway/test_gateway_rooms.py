"""The gateway's rooms against a scripted System A (system_a_script): every request is traced by the
middleware, and the probe's rows that used to end in an unhandled 500 or a complete-looking answer."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from system_a_script import scripted_system_a

from pipelines.gateway.app import create_app
from pipelines.gateway.context import MAX_BODY_BYTES
from pipelines.ops.traces import GatewayStore

pytestmark = pytest.mark.unit
MODELS = {"object": "list", "data": [{"id": "smollm2", "object": "model", "root": "smollm2", "parent": None}]}
CHAT = {"model": "general", "messages": [{"role": "user", "content": "Which support?"}]}


def chunk(text: str) -> str:
    body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "smollm2",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}  # fmt: skip
    return f"data: {json.dumps(body)}\n\n"


class ScriptedSystemA:
    """System A's answers by path; ``calls`` records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.models: Any = MODELS
        self.stream = "".join(chunk(w) for w in ("Ceria ", "supports ", "it.")) + "data: [DONE]\n\n"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.url.path, body))
        if request.url.path == "/v1/models":
            if isinstance(self.models, str):
                return httpx.Response(200, text=self.models, headers={"content-type": "text/html"})
            return httpx.Response(200, json=self.models)
        if request.url.path == "/health":
            return httpx.Response(200)
        if body and body.get("stream"):
            return httpx.Response(
                200, content=self.stream.encode(), headers={"content-type": "text/event-stream"}
            )
        answer = {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": "smollm2",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Ceria."}}],
                  "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}  # fmt: skip
        return httpx.Response(200, json=answer)


class BrokenSearcher:
    def search(self, query: Any) -> Any:
        raise RuntimeError("the Milvus server went away")

    def close(self) -> None:
        pass


@pytest.fixture
def gateway(cbnano_env):
    """(client, scripted System A, trace store, key) of a gateway app in-process."""
    system_a = ScriptedSystemA()
    store = GatewayStore.from_settings(cbnano_env)
    key = store.add_key("alice")
    app = create_app(
        cbnano_env,
        store,
        open_searcher=BrokenSearcher,
        system_a=scripted_system_a(system_a),
    )
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        yield client, system_a, store, key


def traces(store: GatewayStore) -> list[dict[str, Any]]:
    store.flush()
    return list(store.traces())


def test_every_request_is_traced_models_and_feedback_included(gateway):
    client, _system_a, store, key = gateway
    assert client.get("/v1/models").json()["data"][0]["id"] == "general"
    answer = client.post("/v1/chat/completions", json=CHAT).json()
    assert client.post("/v1/feedback", json={"id": answer["id"], "rating": 1}).status_code == 200
    assert client.get(f"/v1/{key}/models").status_code == 404  # a key pasted into a path
    assert client.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    rows = traces(store)
    assert sorted((t["endpoint"], t["status"]) for t in rows) == [
        ("chat", 200),
        ("feedback", 200),
        ("models", 200),
        ("models", 401),
        ("unknown", 404),
    ]
    chat = next(t for t in rows if t["endpoint"] == "chat")
    assert chat["id"] == answer["id"] and chat["tokens_in"] == 7 and chat["user"] == "alice"
    assert key not in json.dumps(rows)


def test_bad_bodies_are_400_or_413_and_never_reach_system_a(gateway):
    client, system_a, store, _key = gateway
    deep = b"[" * 100_000 + b"]" * 100_000
    resp = client.post("/v1/chat/completions", content=deep, headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "nests too deeply" in resp.json()["error"]["message"]
    huge = {**CHAT, "messages": [{"role": "user", "content": "x" * (MAX_BODY_BYTES + 1)}]}
    assert client.post("/v1/chat/completions", json=huge).status_code == 413
    for bad in (
        {"role": "user", "content": {}},
        {"role": "user", "content": None},
        {"role": 5, "content": "x"},
    ):
        resp = client.post("/v1/chat/completions", json={**CHAT, "messages": [bad]})
        assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error", bad
    assert client.post("/v1/chat/completions", json={**CHAT, "stream": "yes"}).status_code == 400
    assert not [path for path, _ in system_a.calls if "completions" in path]
    assert sorted(t["status"] for t in traces(store)) == [400, 400, 400, 400, 400, 413]


def test_embeddings_as_token_ids_are_refused_saying_what_to_set(gateway):
    client, _system_a, store, _key = gateway
    for ids in ([[9906, 1917]], [9906, 1917]):  # what LangChain's OpenAIEmbeddings sends by default
        resp = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": ids})
        assert (
            resp.status_code == 400 and "check_embedding_ctx_length=False" in resp.json()["error"]["message"]
        )
    assert {t["model"] for t in traces(store)} == {"all-MiniLM-L6-v2"}  # refused calls name their model


def test_a_model_list_that_is_not_json_is_a_503_in_openais_shape(gateway):
    client, system_a, _store, _key = gateway
    system_a.models = "<html>502 Bad Gateway</html>"
    resp = client.get("/v1/models")
    assert resp.status_code == 503 and "not JSON" in resp.json()["error"]["message"]


def test_a_cut_stream_or_a_line_that_is_not_json_ends_in_an_error_event_not_done(gateway):
    client, system_a, store, _key = gateway
    whole = client.post("/v1/chat/completions", json={**CHAT, "stream": True}).text
    events = [e.removeprefix("data: ") for e in whole.strip().split("\n\n")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["model"] for c in chunks} == {"general"} and all(c["created"] > 0 for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    for cut in (
        "".join(chunk(w) for w in ("a ", "b ", "c ")),  # cut after 3 chunks: no [DONE]
        chunk("a ") + "data: <html>oops</html>\n\n" + chunk("b ") + "data: [DONE]\n\n",
    ):
        system_a.stream = cut
        text = client.post("/v1/chat/completions", json={**CHAT, "stream": True}).text
        last = json.loads(text.strip().split("\n\n")[-1].removeprefix("data: "))
        assert "data: [DONE]" not in text and last["error"]["code"] == 503, text
    assert sorted(t["status"] for t in traces(store)) == [200, 503, 503]


def test_rag_on_a_search_that_fails_is_a_503_and_an_unforeseen_error_a_traced_500(cbnano_env, gateway):
    client, _system_a, store, _key = gateway
    resp = client.post("/v1/chat/completions", json={**CHAT, "model": "general+rag"})
    assert resp.status_code == 503 and "search is unavailable" in resp.json()["error"]["message"]

    class Exploding:
        def encode(self, texts: list[str]) -> Any:
            raise ValueError("a bug")

    app = create_app(
        cbnano_env,
        store,
        embedder=Exploding,
        system_a=scripted_system_a(ScriptedSystemA()),
    )
    with TestClient(app, raise_server_exceptions=False, headers=client.headers) as other:
        resp = other.post("/v1/embeddings", json={"input": "ceria"})
    assert resp.status_code == 500 and resp.json()["error"]["type"] == "server_error"
    rows = traces(store)
    assert sorted((t["endpoint"], t["status"]) for t in rows) == [("chat", 503), ("embeddings", 500)]
    assert next(t for t in rows if t["status"] == 500)["error"].startswith("ValueError")


def test_a_first_health_check_loading_the_embedder_stalls_no_other_request(cbnano_env):
    entered, release = threading.Event(), threading.Event()

    def slow_embedder() -> Any:
        entered.set()
        assert release.wait(60)
        raise OSError("no model here")

    app = create_app(
        cbnano_env,
        GatewayStore.from_settings(cbnano_env),
        no_auth=True,
        open_searcher=BrokenSearcher,
        embedder=slow_embedder,
        system_a=scripted_system_a(ScriptedSystemA()),
    )
    with TestClient(app) as client:
        answers: dict[str, Any] = {}
        health = threading.Thread(target=lambda: answers.update(health=client.get("/health")))
        health.start()
        assert entered.wait(60)
        # the embedder is still loading (release is not set): the event loop must answer this meanwhile
        assert client.get("/v1/models").status_code == 200 and not release.is_set()
        release.set()
        health.join(60)
    assert answers["health"].status_code == 503
    assert answers["health"].json()["embeddings"] == {"ok": False, "detail": "no model here"}


def test_a_client_that_leaves_a_stream_is_traced(cbnano_env):
    """The ASGI app driven by hand: the client disconnects after the first chunk of a stream that System A
    is still sending."""

    async def endless() -> Any:
        yield chunk("first ").encode()
        await asyncio.sleep(60)  # System A still thinking when the client goes
        yield chunk("never ").encode()

    def system_a(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=MODELS)
        return httpx.Response(200, content=endless(), headers={"content-type": "text/event-stream"})

    store = GatewayStore.from_settings(cbnano_env)
    app = create_app(
        cbnano_env,
        store,
        no_auth=True,
        system_a=scripted_system_a(system_a),
    )
    sent: list[dict[str, Any]] = []

    async def drive() -> None:
        got_chunk = asyncio.Event()
        body = json.dumps({**CHAT, "stream": True}).encode()
        requests = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if requests:
                return requests.pop()
            await got_chunk.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and message.get("body"):
                got_chunk.set()

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "query_string": b"", "headers": [(b"content-type", b"application/json")], "scheme": "http",
                 "server": ("test", 80), "client": ("127.0.0.1", 1), "http_version": "1.1", "root_path": ""}  # fmt: skip
        await asyncio.wait_for(app(scope, receive, send), 60)

    asyncio.run(drive())
    assert sent[0]["status"] == 200 and not any(b"never" in m.get("body", b"") for m in sent)
    [row] = traces(store)
    assert row["status"] == 499 and "left" in row["error"]
    assert app.state.gateway.queue.busy == 0  # its place at System A was given back


def test_the_gateway_package_stays_in_rooms():
    """No function in the gateway package over 80 lines: app.py is wiring, each concern a module of its own."""
    import ast
    from pathlib import Path

    import pipelines.gateway

    root = Path(pipelines.gateway.__file__).parent
    long = [
        f"{path.relative_to(root)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(root.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80
    ]
    assert len(list(root.rglob("routes/*.py"))) >= 5 and long == []


def test_a_deleted_trace_database_is_a_503_and_health_says_so(gateway, cbnano_env):
    client, _system_a, store, _key = gateway
    db = cbnano_env.home / "gateway.db"
    assert client.get("/v1/models").status_code == 200
    store.flush()
    db.rename(db.with_suffix(".moved"))  # deleted under the running gateway
    gone = client.get("/v1/models")
    assert gone.status_code == 503 and "is gone" in gone.json()["error"]["message"]
    health = client.get("/health").json()
    assert health["traces"]["ok"] is False and "is gone" in health["traces"]["detail"]
    db.with_suffix(".moved").rename(db)  # restored: the gateway uses it again
    assert client.get("/v1/models").status_code == 200


def test_a_read_only_trace_database_still_checks_keys_and_refuses_writes_with_503(cbnano_env):
    writable = GatewayStore.from_settings(cbnano_env)
    key = writable.add_key("alice")
    db = cbnano_env.home / "gateway.db"
    read_only = GatewayStore(f"sqlite:///file:{db}?mode=ro&uri=true")
    app = create_app(
        cbnano_env,
        read_only,
        system_a=scripted_system_a(ScriptedSystemA()),
    )
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        assert client.get("/v1/models").status_code == 200  # the last-use write fails, quietly
        rated = client.post("/v1/feedback", json={"id": "cbn-x", "rating": 1})
        assert rated.status_code in (404, 503)  # nothing to rate, or the database refused: never a 500
