"""The gateway driven by the real ``openai`` client, in front of the vLLM stand-in and a real Milvus Lite corpus.

One gateway (uvicorn on a free port) serves the module: a catalysis production adapter handed to the stand-in,
``materials`` published but not served, the golden corpus indexed with the real MiniLM.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from pipelines.embedding.minilm import MINILM, get_embedder
from pipelines.ingestion.indexing import index_documents
from pipelines.ops.traces import GatewayStore
from pipelines.publishing.model_store import ModelStore
from pipelines.publishing.serving import hand_off
from pipelines.retrieval.golden import golden_path, load_corpus
from pipelines.retrieval.search import Searcher, parse_query
from pipelines.settings import load_settings
from pipelines.vectorstore.milvus import MilvusStore
from pipelines.vllm_standin import VLLMStandIn

pytestmark = pytest.mark.integration
QUESTION = "Which ligand keeps CsPbI3 in its black phase?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _version(store: ModelStore, root: Path, domain: str, version: str, promote: bool = True) -> None:
    content = root / f"{domain}-{version}"
    (content / "adapter").mkdir(parents=True)
    (content / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "smollm2", "r": 16})
    )
    (content / "adapter" / "adapter_model.safetensors").write_bytes(b"w")
    store.publish(domain, version, content, {}, promote=promote)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """System A (stand-in), the corpus, the model store and a running gateway with one user, alice."""
    import uvicorn

    from pipelines.gateway.app import create_app

    root = tmp_path_factory.mktemp("gateway")
    saved = {k: v for k, v in os.environ.items() if k.startswith("CBNANO_")}
    for k in saved:
        del os.environ[k]
    system_a = VLLMStandIn(base="smollm2").start()
    os.environ.update({"CBNANO_HOME": str(root / "home"), "CBNANO_SYSTEM_A_URL": system_a.url})
    settings = load_settings()
    with MilvusStore.from_settings(settings) as ms:
        ms.ensure_collection(384)
        index_documents(load_corpus(golden_path("corpus.jsonl")), ms, lambda: get_embedder(MINILM), MINILM)
    store = ModelStore(settings.model_store)
    _version(store, root, "catalysis", "c1")
    _version(store, root, "materials", "m1")
    assert hand_off(settings, "catalysis", alert=False)["state"] == "confirmed"
    system_a.adapters.pop("materials", None)  # materials has production, but System A does not serve it
    gw_store = GatewayStore.from_settings(settings)
    key = gw_store.add_key("alice")
    port = _free_port()
    app = create_app(settings, gw_store)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    yield {"url": url, "key": key, "settings": settings, "system_a": system_a, "store": gw_store}
    server.should_exit = True
    thread.join(30)
    system_a.stop()
    for k in [k for k in os.environ if k.startswith("CBNANO_")]:
        del os.environ[k]
    os.environ.update(saved)


def client(lab, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=lab["url"] + "/v1", api_key=key or lab["key"], max_retries=0, timeout=60)


def test_models_lists_the_base_and_served_domains_with_their_rag_twins(lab):
    ids = [m.id for m in client(lab).models.list()]
    # materials is not served; every served model also answers from the corpus (+rag) or with tools (+tools)
    assert ids == ["general", "general+rag", "general+tools", "catalysis", "catalysis+rag", "catalysis+tools"]


def test_chat_goes_to_the_domain_adapter_or_the_base(lab):
    c = client(lab)
    out = c.chat.completions.create(model="catalysis", messages=[{"role": "user", "content": "What is TOF?"}])
    assert out.choices[0].message.content == "Stand-in answer from catalysis."
    assert out.id.startswith("cbn-") and out.model == "catalysis"
    out = c.chat.completions.create(model="general", messages=[{"role": "user", "content": "Hello"}])
    assert out.choices[0].message.content == "Stand-in answer from smollm2."


def test_rag_chat_answers_from_the_platforms_search_with_numbered_sources(lab):
    out = client(lab).chat.completions.create(
        model="catalysis+rag", messages=[{"role": "user", "content": QUESTION}]
    )
    sources = out.model_extra["sources"]
    with Searcher.from_settings(lab["settings"]) as s:
        expected = s.search(parse_query(QUESTION, top_k=5)).results
    assert [x["doc_id"] for x in sources] == [r.doc_id for r in expected]
    assert sources[0] == {
        "n": 1,
        "doc_id": "2501.07731",
        "title": "Stabilizing black-phase CsPbI3 with surface ligands",
        "url": "https://arxiv.org/abs/2501.07731",
    }
    # the model's answer, then the numbered sources as text (for clients that read only the message)
    assert out.choices[0].message.content == (
        "Stand-in answer from catalysis [1].\n\nSources:\n"
        + "\n".join(f"[{x['n']}] {x['title']} — {x['url']}" for x in sources)
    )
    bare = client(lab).chat.completions.create(
        model="catalysis+rag",
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"references": False},
    )
    assert (
        bare.choices[0].message.content == "Stand-in answer from catalysis [1]."
        and bare.model_extra["sources"]
    )
    assert "references" not in lab["system_a"].requests[-1][2]  # the gateway's option is not System A's
    # System A got the ask prompt: the numbered sources before the question
    _, _, body = [r for r in lab["system_a"].requests if r[1] == "/v1/chat/completions"][-1]
    assert (
        body["model"] == "catalysis"
        and "[1] Stabilizing black-phase CsPbI3" in body["messages"][-1]["content"]
    )
    assert body["messages"][-1]["content"].endswith(f"Question: {QUESTION}")


def test_streaming_passes_events_through_and_the_last_chunk_carries_sources(lab):
    c = client(lab)
    chunks = list(
        c.chat.completions.create(
            model="catalysis+rag", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.startswith("Stand-in answer from catalysis [1].\n\nSources:\n[1] Stabilizing black-phase")
    assert len(chunks) > 2 and {ch.model for ch in chunks} == {"catalysis+rag"} and chunks[0].created > 0
    assert chunks[-1].model_extra["sources"][0]["doc_id"] == "2501.07731"
    assert all("sources" not in ch.model_extra for ch in chunks[:-1])
    plain = list(c.completions.create(model="general", prompt="Say hi", stream=True))
    assert "".join(ch.choices[0].text for ch in plain) == "Stand-in answer from smollm2."
    raw = httpx.post(
        lab["url"] + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {lab['key']}"},
        json={"model": "catalysis", "messages": [{"role": "user", "content": "x"}], "stream": True},
    )
    assert raw.text.rstrip().endswith("data: [DONE]")


PRICE_TOOL = {
    "type": "function",
    "function": {
        "name": "catalyst_price",
        "description": "Price of a catalyst metal per gram",
        "parameters": {"type": "object", "properties": {"metal": {"type": "string"}}, "required": ["metal"]},
    },
}


def test_a_clients_own_tools_go_to_system_a_and_its_tool_calls_come_back_streamed_or_not(lab):
    c = client(lab)
    ask = [{"role": "user", "content": 'What does Pt cost? call catalyst_price {"metal": "Pt"}'}]
    out = c.chat.completions.create(model="catalysis", messages=ask, tools=[PRICE_TOOL], tool_choice="auto")
    [call] = out.choices[0].message.tool_calls
    assert out.choices[0].finish_reason == "tool_calls" and call.function.name == "catalyst_price"
    assert json.loads(call.function.arguments) == {"metal": "Pt"}
    sent = lab["system_a"].requests[-1][2]
    assert sent["tools"] == [PRICE_TOOL] and sent["tool_choice"] == "auto"  # passed through as given
    # streamed: the deltas put the same call together
    name, args, finish = "", "", None
    for chunk in c.chat.completions.create(model="catalysis", messages=ask, tools=[PRICE_TOOL], stream=True):
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                name += delta.function.name or ""
                args += delta.function.arguments or ""
            finish = choice.finish_reason or finish
        assert chunk.model == "catalysis"
    assert (name, json.loads(args), finish) == ("catalyst_price", {"metal": "Pt"}, "tool_calls")
    # the client runs its tool and sends the result: System A answers from it
    done = c.chat.completions.create(
        model="catalysis",
        tools=[PRICE_TOOL],
        messages=[*ask, out.choices[0].message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": '{"usd_per_g": 31.5}'}],
    )  # fmt: skip
    assert done.choices[0].message.content.endswith('after 1 tool result(s): {"usd_per_g": 31.5}')


def test_tools_models_run_the_platforms_tools_and_answer_with_their_sources(lab):
    c = client(lab)
    question = (
        f"Aspirin's properties, and who keeps CsPbI3 black? "
        f'call rdkit_properties {{"smiles": "CC(=O)Oc1ccccc1C(=O)O"}} '
        f'call search_corpus {{"query": "{QUESTION}", "top_k": 3}} '
        f'call rdkit_properties {{"smiles": "C1CC("}}'
    )
    out = c.chat.completions.create(model="catalysis+tools", messages=[{"role": "user", "content": question}])
    text = out.choices[0].message.content
    assert "after 3 tool result(s)" in text and '"formula": "C9H8O4"' in text
    assert "not a valid SMILES" in text  # the tool's error reached the model as its answer, not a 500
    assert out.model_extra["sources"][0]["doc_id"] == "2501.07731" and "Sources:\n[1]" in text
    spans = lab["store"].spans(out.id)
    assert [(s["name"], s["ok"]) for s in spans] == [
        ("rdkit_properties", True),
        ("search_corpus", True),
        ("rdkit_properties", False),
    ]
    asked = [r[2] for r in lab["system_a"].requests if r[1] == "/v1/chat/completions"][-2:]
    assert [s["function"]["name"] for s in asked[0]["tools"]] == [
        "search_corpus",
        "pubchem_compound",
        "rdkit_properties",
    ]
    assert [m["role"] for m in asked[1]["messages"]][-4:] == ["assistant", "tool", "tool", "tool"]
    streamed = list(
        c.chat.completions.create(
            model="catalysis+tools", messages=[{"role": "user", "content": question}], stream=True
        )
    )
    assert "after 3 tool result(s)" in "".join(
        ch.choices[0].delta.content or "" for ch in streamed if ch.choices
    )
    assert streamed[-1].model_extra["sources"][0]["doc_id"] == "2501.07731"
    with pytest.raises(openai.BadRequestError, match="brings its own tools"):
        c.chat.completions.create(
            model="catalysis+tools", messages=[{"role": "user", "content": "x"}], tools=[PRICE_TOOL]
        )


def test_completions_plain(lab):
    out = client(lab).completions.create(model="catalysis", prompt="The turnover frequency is")
    assert out.choices[0].text == "Stand-in answer from catalysis."


def test_embeddings_equal_the_platforms_own_encoder(lab):
    c = client(lab)
    texts = ["Li6PS5Cl argyrodite electrolyte", "ammonia synthesis on Ru"]
    out = c.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    mine = get_embedder(MINILM).encode(texts)
    got = np.array([d.embedding for d in out.data])
    assert got.shape == (2, 384) and np.allclose(got, mine, atol=1e-6)
    assert out.usage.prompt_tokens > 0
    one = c.embeddings.create(model="all-MiniLM-L6-v2", input=texts[0])
    assert np.allclose(one.data[0].embedding, mine[0], atol=1e-6)
    with pytest.raises(openai.BadRequestError):
        c.embeddings.create(model="all-MiniLM-L6-v2", input=["x"] * 300)


def test_errors_map_to_the_clients_exception_classes(lab):
    c = client(lab)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        c.chat.completions.create(model="materials", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="catalysis", messages=[])
    with pytest.raises(openai.AuthenticationError):
        client(lab, key="cbn_wrong").models.list()
    with pytest.raises(openai.NotFoundError):
        c.embeddings.create(model="text-embedding-3-small", input="x")


def test_a_revoked_key_is_refused(lab):
    key = lab["store"].add_key("bob")
    assert [m.id for m in client(lab, key).models.list()][0] == "general"
    lab["store"].revoke("bob")
    with pytest.raises(openai.AuthenticationError):
        client(lab, key).models.list()


def test_the_lora_api_is_unreachable_through_the_gateway(lab):
    before = len(lab["system_a"].requests)
    for path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
        resp = httpx.post(lab["url"] + path, headers={"Authorization": f"Bearer {lab['key']}"}, json={})
        assert resp.status_code in (404, 405)
    assert not any("lora" in r[1] for r in lab["system_a"].requests[before:])


def test_feedback_is_stored_against_the_completion_and_traces_hold_no_key(lab):
    out = client(lab).chat.completions.create(
        model="catalysis+rag", messages=[{"role": "user", "content": QUESTION}]
    )
    h = {"Authorization": f"Bearer {lab['key']}"}
    ok = httpx.post(
        lab["url"] + "/v1/feedback", headers=h, json={"id": out.id, "rating": 1, "comment": "good"}
    )
    assert ok.status_code == 200
    missing = httpx.post(lab["url"] + "/v1/feedback", headers=h, json={"id": "cbn-nope", "rating": 1})
    assert missing.status_code == 404 and missing.json()["error"]["message"]
    assert (
        httpx.post(lab["url"] + "/v1/feedback", headers=h, json={"id": out.id, "rating": 5}).status_code
        == 400
    )
    # the README's way: the openai client's own post, on the same base URL and key
    again = client(lab).post("/feedback", cast_to=object, body={"id": out.id, "rating": 1, "comment": "good"})
    assert again["stored"] is True
    assert (
        httpx.get(lab["url"] + "/v1/models", headers={"Authorization": "Bearer cbn_wrong"}).status_code == 401
    )
    traces = {t["id"]: t for t in lab["store"].traces()}
    mine = traces[out.id]
    assert (mine["user"], mine["model"], mine["status"], mine["rating"]) == ("alice", "catalysis+rag", 200, 1)
    assert mine["sources"][0] == "2501.07731" and mine["tokens_in"] and mine["latency_ms"] > 0
    assert any(t["status"] == 401 for t in traces.values())  # refused requests are traced too
    assert lab["key"] not in json.dumps(list(traces.values()))
    good = lab["store"].rated("catalysis", 1)
    assert (
        good
        and good[-1]["answer"] == "Stand-in answer from catalysis [1]."
        and good[-1]["question"] == QUESTION
    )


def test_search_is_the_search_services_code(lab):
    resp = httpx.get(
        lab["url"] + "/v1/search",
        params={"q": QUESTION, "k": 3},
        headers={"Authorization": f"Bearer {lab['key']}"},
    )
    assert resp.status_code == 200 and resp.json()["results"][0]["doc_id"] == "2501.07731"
    bad = httpx.get(
        lab["url"] + "/v1/search",
        params={"q": "x", "k": "abc"},
        headers={"Authorization": f"Bearer {lab['key']}"},
    )
    assert bad.status_code == 400


def test_metrics_are_labelled_by_model_and_status_behind_a_key(lab):
    assert httpx.get(lab["url"] + "/metrics").status_code == 401
    body = httpx.get(lab["url"] + "/metrics", headers={"Authorization": f"Bearer {lab['key']}"}).text
    assert 'cbnano_gateway_requests_total{endpoint="chat",model="catalysis+rag",status="200"}' in body
    assert "cbnano_gateway_latency_seconds_bucket" in body


def test_health_and_system_a_down(lab):
    # materials has a production version that System A does not serve: not well
    first = httpx.get(lab["url"] + "/health")
    assert first.status_code == 503
    assert first.json()["system_a"]["domains"]["materials"] == {"production": "m1", "served": False}
    assert hand_off(lab["settings"], "materials", alert=False)["state"] == "confirmed"
    try:
        ok = httpx.get(lab["url"] + "/health")
        assert ok.status_code == 200, ok.text
        assert ok.json()["search"]["ok"] and ok.json()["embeddings"]["ok"]
        lab["system_a"].stop()
        down = httpx.get(lab["url"] + "/health")
        assert down.status_code == 503 and down.json()["system_a"]["ok"] is False
        assert lab["key"] not in down.text
        with pytest.raises(openai.InternalServerError) as exc:
            client(lab).chat.completions.create(
                model="catalysis", messages=[{"role": "user", "content": "x"}]
            )
        assert exc.value.status_code == 503
    finally:
        lab["system_a"].start()
        hand_off(lab["settings"], "catalysis", alert=False)


def test_the_readme_way_to_try_the_gateway_without_a_system_a(tmp_path):
    """The README's commands, as processes: the stand-in System A, `cbnano gateway --no-auth`, a chat."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CBNANO_")}
    env["CBNANO_HOME"] = str(tmp_path / "home")
    standin = subprocess.Popen(
        [sys.executable, "-m", "pipelines.vllm_standin", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    port = _free_port()
    gateway = None
    try:
        url = standin.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        env["CBNANO_SYSTEM_A_URL"] = url
        cbnano = Path(sys.executable).with_name("cbnano")
        gateway = subprocess.Popen(
            [str(cbnano), "gateway", "--no-auth", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while True:  # waiting for the port to answer, not asserting how fast
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
                break
            except httpx.TransportError:
                assert gateway.poll() is None and time.monotonic() < deadline
                time.sleep(0.5)
        assert "general" in {m["id"] for m in models["data"]}
        chat = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "general", "messages": [{"role": "user", "content": "Which support?"}]},
            timeout=30,
        )
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
    finally:
        for proc in (gateway, standin):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


def test_langchain_chat_and_embeddings_through_the_gateway(lab):
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    chat = ChatOpenAI(base_url=lab["url"] + "/v1", api_key=lab["key"], model="catalysis+rag", max_retries=0)
    answer = chat.invoke(QUESTION)
    # LangChain keeps only the message: the sources reach it as the numbered references in the text
    assert answer.content.startswith("Stand-in answer from catalysis [1].")
    assert (
        "Sources:\n[1] Stabilizing black-phase CsPbI3 with surface ligands — https://arxiv.org/abs/2501.07731"
        in (answer.content)
    )
    streamed = "".join(str(chunk.content) for chunk in chat.stream(QUESTION))
    assert streamed == answer.content
    # LangChain's default sends token ids (tiktoken's); with check_embedding_ctx_length=False it sends text
    emb = OpenAIEmbeddings(
        base_url=lab["url"] + "/v1",
        api_key=lab["key"],
        model="all-MiniLM-L6-v2",
        check_embedding_ctx_length=False,
    )
    vector = emb.embed_query("perovskite black phase")
    ours = get_embedder(MINILM).encode(["perovskite black phase"])[0]
    assert len(vector) == 384 and np.allclose(vector, ours, atol=1e-5)


def test_the_llm_cli_with_the_gateway_as_an_extra_openai_model(lab, tmp_path):
    import subprocess
    import sys

    (tmp_path / "extra-openai-models.yaml").write_text(
        "- model_id: cbnano-catalysis-rag\n"
        "  model_name: catalysis+rag\n"
        f"  api_base: {lab['url']}/v1\n"
        "  api_key_name: cbnano\n"
    )
    (tmp_path / "keys.json").write_text(json.dumps({"cbnano": lab["key"]}))
    llm = Path(sys.executable).with_name("llm")
    env = {**os.environ, "LLM_USER_PATH": str(tmp_path)}
    out = subprocess.run(
        [str(llm), "-m", "cbnano-catalysis-rag", "--no-log", QUESTION],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert (
        out.stdout.startswith("Stand-in answer from catalysis [1].")
        and "https://arxiv.org/abs/2501.07731" in out.stdout
    )


def test_open_webui_calls_models_and_a_streamed_chat_with_its_user_headers(lab):
    """Open WebUI's wire calls (it is not installed here): GET /models, then a streamed chat completion with
    its per-user headers, which the gateway accepts."""
    h = {
        "Authorization": f"Bearer {lab['key']}",
        "X-OpenWebUI-User-Name": "alice",
        "X-OpenWebUI-User-Id": "u-1",
    }
    models = httpx.get(lab["url"] + "/v1/models", headers=h).json()
    assert "catalysis+rag" in {m["id"] for m in models["data"]}
    # `created` is when the production version was published (the manifest's time), not 0
    published = ModelStore(lab["settings"].model_store).manifest("catalysis", "c1")["published_at"]
    created = {m["id"]: m["created"] for m in models["data"]}
    assert (
        created["catalysis+rag"] == created["catalysis"] == int(datetime.fromisoformat(published).timestamp())
    )
    body = {"model": "catalysis+rag", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    with httpx.stream("POST", lab["url"] + "/v1/chat/completions", headers=h, json=body) as resp:
        events = [line.removeprefix("data: ") for line in resp.iter_lines() if line.startswith("data: ")]
    assert resp.status_code == 200 and events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.startswith("Stand-in answer from catalysis [1].") and "Sources:" in text
    assert {c["model"] for c in chunks} == {"catalysis+rag"}
