"""``POST /v1/embeddings``: all-MiniLM-L6-v2 (384-d), as the platform embeds for Milvus."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from pipelines.gateway.context import Body, User, gateway_of
from pipelines.gateway.shapes import (
    EMBEDDING_MODELS,
    MAX_EMBED_CHARS,
    MAX_EMBED_INPUTS,
    EmbeddingList,
    GatewayError,
    vector,
)
from pipelines.gateway.tracing import trace_of

router = APIRouter()


def embedding_inputs(body: Any) -> tuple[list[str], str]:
    """(texts, encoding) of an embeddings request; 400/404 for what the gateway cannot embed."""
    if not isinstance(body, dict):
        raise GatewayError(400, "the request body must be a JSON object")
    model = body.get("model") or EMBEDDING_MODELS[0]
    if model not in EMBEDDING_MODELS:
        raise GatewayError(404, f"The model `{model}` does not exist (embeddings: {EMBEDDING_MODELS[0]})")
    raw = body.get("input")
    if isinstance(raw, list) and raw and all(isinstance(t, int) or (isinstance(t, list) and t) for t in raw):
        raise GatewayError(
            400,
            "'input' is token ids, which only OpenAI's own tokenizer can read back: send text (LangChain: "
            "OpenAIEmbeddings(..., check_embedding_ctx_length=False))",
        )
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise GatewayError(400, "'input' must be a non-empty string or a list of non-empty strings")
    if len(texts) > MAX_EMBED_INPUTS or any(len(t) > MAX_EMBED_CHARS for t in texts):
        raise GatewayError(
            400, f"at most {MAX_EMBED_INPUTS} inputs of at most {MAX_EMBED_CHARS:,} characters each"
        )
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):  # the openai client asks for base64 (little-endian float32)
        raise GatewayError(400, "encoding_format must be 'float' or 'base64'")
    return texts, encoding


@router.post("/v1/embeddings", response_model=None)
async def embeddings(request: Request, user: User, body: Body) -> EmbeddingList:
    trace = trace_of(request)
    if isinstance(body, dict):
        trace.model = str(body.get("model") or EMBEDDING_MODELS[0])[:128]
    texts, encoding = embedding_inputs(body)
    emb = await gateway_of(request).backends.embedder()
    vectors = await run_in_threadpool(emb.encode, texts)
    trace.tokens_in = tokens = sum(len(emb.token_offsets(t)) for t in texts)
    return {
        "object": "list",
        "model": EMBEDDING_MODELS[0],
        "data": [
            {"object": "embedding", "index": i, "embedding": vector(v, encoding)}
            for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
