"""``POST /v1/chat/completions`` and ``POST /v1/completions``: ``general`` goes to System A's base,
``<domain>`` to the domain's adapter, and ``<name>+rag`` answers from the corpus with the ``ask`` prompt and
the ``sources`` it used (on the completion; streamed, on a last chunk that has no choices).

Only these two System A routes are ever called for users: the LoRA load/unload API is unreachable through the
gateway. A streamed answer passes System A's events through with the gateway's completion id, model id and
``created`` on every chunk; a stream that System A cuts, or that carries a line that is not JSON, ends with an
error event in OpenAI's shape (no ``[DONE]``) and a trace that says 503, never as a complete-looking answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from pipelines.gateway.backends import Reply, UpstreamError
from pipelines.gateway.context import Body, Gateway, User, gateway_of
from pipelines.gateway.limits import cache_key
from pipelines.gateway.shapes import (
    MODES,
    RAG,
    TOOLS,
    GatewayError,
    SourceRef,
    error_body,
    first_choice,
    last_user,
    now_s,
    references,
    validate_completion,
)
from pipelines.gateway.tools import Toolbox, run_with_tools
from pipelines.gateway.tracing import trace_of
from pipelines.ops.traces import Trace
from pipelines.prompt import ask_messages, source_block
from pipelines.retrieval.search import SearchError, parse_query
from pipelines.settings import DOMAINS
from pipelines.vectorstore.milvus import VectorStoreError

RAG_TOP_K = 5
PATHS = {"chat": "/v1/chat/completions", "text": "/v1/completions"}
router = APIRouter()


async def resolve(gw: Gateway, model: str) -> tuple[str, str, str]:
    """(gateway name, System A model, mode: "" or "+rag" or "+tools") of a requested model; 404 when it is
    not served."""
    mode = next((m for m in MODES if m and model.endswith(m)), "")
    name = model.removesuffix(mode) if mode else model
    served = await gw.backends.served()
    if name not in served:
        known = ", ".join(sorted(n + s for n in served for s in MODES)) or "none"
        raise GatewayError(404, f"The model `{model}` does not exist (served: {known})")
    return name, served[name], mode


async def retrieve(gw: Gateway, question: str) -> tuple[list[str], list[SourceRef]]:
    """The source blocks for the prompt and the sources for the answer; an empty corpus gives none."""
    if not question.strip():
        raise GatewayError(400, "a +rag model needs a question: the last user message is empty")
    searcher = await gw.backends.searcher()
    try:
        answer = await run_in_threadpool(searcher.search, parse_query(question[:2000], top_k=RAG_TOP_K))
    except SearchError as exc:
        raise GatewayError(400, str(exc)) from None
    except (VectorStoreError, OSError, RuntimeError) as exc:
        raise GatewayError(503, f"search is unavailable: {exc}") from None
    results = answer.results
    blocks = [source_block(n, r.title, r.source, r.doc_id, r.text) for n, r in enumerate(results, 1)]
    sources = [SourceRef(n=n, doc_id=r.doc_id, title=r.title, url=r.url) for n, r in enumerate(results, 1)]
    return blocks, sources


async def upstream_body(
    gw: Gateway, body: dict[str, Any], kind: str, target: str, rag: bool, trace: Trace
) -> tuple[dict[str, Any], list[SourceRef]]:
    """What System A is asked (its model name; for ``+rag`` the ``ask`` prompt around the retrieved
    sources) and the sources."""
    upstream = {k: v for k, v in body.items() if k not in ("model", "user", "references")}
    upstream["model"] = target
    if not rag:
        return upstream, []
    question = last_user(body["messages"]) if kind == "chat" else body["prompt"]
    blocks, sources = await retrieve(gw, question)
    domain = body["model"].removesuffix(RAG)
    asked = ask_messages(question, blocks, domain if domain in DOMAINS else None)
    if kind == "chat":
        earlier = [m for m in body["messages"][:-1] if m.get("role") != "system"]
        upstream["messages"] = [asked[0], *earlier, asked[1]]
    else:
        upstream["prompt"] = f"{asked[0]['content']}\n\n{asked[1]['content']}\n\nAnswer:"
    trace.question = question[:4000]
    trace.sources = [s["doc_id"] for s in sources]
    return upstream, sources


async def complete(request: Request, body: Any, kind: str) -> Response:
    gw = gateway_of(request)
    trace = trace_of(request)
    body = validate_completion(body, kind)
    name, target, mode = await resolve(gw, body["model"])
    if mode == TOOLS:
        return await _with_tools(gw, request, body, kind, target)
    rag = mode == RAG
    upstream, sources = await upstream_body(gw, body, kind, target, rag, trace)
    created = now_s()
    key = cache_key(upstream, gw.backends.versions.get(name, name)) if gw.cache is not None else None
    cached = await gw.cache.get(key) if gw.cache is not None and key else None
    if key:
        gw.metrics.cache.labels("hit" if cached else "miss").inc()
    shown = sources if rag else None
    refs = references(sources) if rag and body.get("references", True) else ""
    if cached is not None:
        answer = answer_of(cached, trace, body["model"], created, shown, kind, refs)
        trace.tokens_in = trace.tokens_out = None  # System A did no work: nothing counts toward a limit
        return answer
    release = await _queue(gw, request)
    if body.get("stream"):
        try:
            resp = await gw.backends.system_a.stream(PATHS[kind], upstream)
        except BaseException:
            release()
            raise
        relay = _relay(resp, trace, sources, kind, body["model"], created, keep_answer=rag, refs=refs)
        return StreamingResponse(_released(relay, release), media_type="text/event-stream")
    try:
        out = await gw.backends.system_a.post(PATHS[kind], upstream)
    finally:
        release()
    answer = answer_of(out, trace, body["model"], created, shown, kind, refs)
    if key and gw.cache is not None:
        await gw.cache.put(key, out)
    return answer


async def _with_tools(
    gw: Gateway, request: Request, body: dict[str, Any], kind: str, target: str
) -> Response:
    """A ``+tools`` answer: the platform's tools run in a bounded loop (:mod:`pipelines.gateway.tools`), and
    the answer carries the sources they used; streamed, it comes as one chunk once the loop is done."""
    if kind != "chat":
        raise GatewayError(400, f"{TOOLS} models answer chat completions only")
    trace = trace_of(request)
    upstream = {k: v for k, v in body.items() if k not in ("model", "user", "references", "stream")}
    upstream["model"] = target
    trace.question = last_user(body["messages"])[:4000]
    toolbox = Toolbox(gw.settings, gw.backends.searcher_now, trace)
    release = await _queue(gw, request)
    try:
        out = await run_with_tools(lambda b: gw.backends.system_a.post(PATHS[kind], b), upstream, toolbox)
    finally:
        release()
    trace.sources = [s["doc_id"] for s in toolbox.sources]
    refs = references(toolbox.sources) if body.get("references", True) else ""
    created = now_s()
    if not body.get("stream"):
        return answer_of(out, trace, body["model"], created, toolbox.sources, kind, refs)
    text = str((first_choice(out).get("message") or {}).get("content") or "")
    trace.answer = text[:8000]
    head = {"id": trace.id, "object": "chat.completion.chunk", "created": created, "model": body["model"]}
    delta = {"role": "assistant", "content": text + refs}
    events = [
        _event({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": "stop"}]}),
        _event({**head, "choices": [], "sources": toolbox.sources}),
        b"data: [DONE]\n\n",
    ]
    return StreamingResponse(iter(events), media_type="text/event-stream")


async def _queue(gw: Gateway, request: Request) -> Callable[[], None]:
    """Wait for a place at System A (interactive users before batch ones when it is busy); returns its
    release, which may be called more than once and is called in any case when the request ends (a stream
    whose client left before its first byte never runs its own ``finally``)."""
    gw.metrics.queued.inc()
    try:
        await gw.queue.acquire(getattr(request.state, "priority", "interactive"))
    finally:
        gw.metrics.queued.dec()
    held = [True]

    def release() -> None:
        if held.pop() if held else False:
            gw.queue.release()

    request.state.on_end.append(release)
    return release


async def _released(stream: AsyncIterator[bytes], release: Callable[[], None]) -> AsyncIterator[bytes]:
    """``stream``, giving the place at System A back as soon as it ends (or the client leaves)."""
    try:
        async for part in stream:
            yield part
    finally:
        release()


def answer_of(
    out: dict[str, Any],
    trace: Trace,
    model: str,
    created: int,
    sources: list[SourceRef] | None,
    kind: str,
    refs: str = "",
) -> Response:
    """System A's (or the cache's) completion as the gateway answers it: its id (the trace's, for feedback),
    model id, ``created`` and, for ``+rag``, the sources (and ``refs`` after the answer's text)."""
    out = dict(out)
    first = first_choice(out)
    choices = out["choices"]
    answer = (first.get("message") or {}).get("content") if kind == "chat" else first.get("text")
    out.update(id=trace.id, model=model, created=out.get("created") or created)
    if sources is not None:
        out["sources"] = sources
        trace.answer = str(answer or "")[:8000]
    if refs and isinstance(answer, str):
        out["choices"] = [dict(first), *choices[1:]]
        if kind == "chat":
            out["choices"][0]["message"] = {**first["message"], "content": answer + refs}
        else:
            out["choices"][0]["text"] = answer + refs
    usage = out.get("usage") or {}
    trace.tokens_in, trace.tokens_out = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return Response(orjson.dumps(out), media_type="application/json")


@router.post("/v1/chat/completions")
async def chat(request: Request, user: User, body: Body) -> Response:
    return await complete(request, body, "chat")


@router.post("/v1/completions")
async def completions(request: Request, user: User, body: Body) -> Response:
    return await complete(request, body, "text")


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _relay(
    resp: Reply,
    trace: Trace,
    sources: list[SourceRef],
    kind: str,
    model: str,
    created: int,
    keep_answer: bool,
    refs: str = "",
) -> AsyncIterator[bytes]:
    """System A's events as they come, each with the gateway's id, model and ``created``; for ``+rag`` a last
    chunk with no choices and the ``sources`` (as OpenAI's usage chunk has no choices), then ``data: [DONE]``.
    A stream cut before System A's ``[DONE]``, or a line that is not JSON, ends with an error event instead,
    and the trace says 503."""
    answer: list[str] = []
    problem = "System A's stream ended before [DONE]"
    try:
        async for line in resp.lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                problem = ""
                break
            try:
                chunk = orjson.loads(data)
            except ValueError:
                chunk = None
            if not isinstance(chunk, dict):
                problem = "System A sent a stream line that is not a JSON chunk"
                break
            chunk.update(id=trace.id, model=model, created=created)
            for c in chunk.get("choices") or []:
                piece = (c.get("delta") or {}).get("content") if kind == "chat" else c.get("text")
                if piece:
                    answer.append(str(piece))
            usage = chunk.get("usage") or {}
            trace.tokens_in = usage.get("prompt_tokens") or trace.tokens_in
            trace.tokens_out = usage.get("completion_tokens") or trace.tokens_out
            yield _event(chunk)
    except UpstreamError as exc:
        problem = str(exc)
    finally:
        resp.close()
        if keep_answer:
            trace.answer = "".join(answer)[:8000]
    if problem:
        trace.status, trace.error = 503, problem
        yield _event(error_body(503, problem))
        return
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    if refs:
        piece = {"index": 0, "delta": {"content": refs}} if kind == "chat" else {"index": 0, "text": refs}
        yield _event({"id": trace.id, "object": obj, "created": created, "model": model, "choices": [piece]})
    if sources:
        yield _event(
            {
                "id": trace.id,
                "object": obj,
                "created": created,
                "model": model,
                "choices": [],
                "sources": sources,
            }
        )
    yield b"data: [DONE]\n\n"
