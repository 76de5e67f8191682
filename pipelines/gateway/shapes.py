"""OpenAI's request and response shapes as the gateway speaks them: errors, model entries, completions'
sources and usage, embeddings, and the checks of a chat or completion request's body.

Nothing here talks to a backend; the route modules build their answers from these.
"""

from __future__ import annotations

import base64
import time
from typing import Any, TypedDict

import numpy as np
from fastapi.responses import JSONResponse

GENERAL = "general"
RAG = "+rag"
TOOLS = "+tools"
MODES = (
    "",
    RAG,
    TOOLS,
)  # what a served model's id may end with: itself, with retrieval, with the platform's tools
EMBEDDING_MODELS = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MAX_EMBED_INPUTS = 256
MAX_EMBED_CHARS = 20_000
ROLES = ("system", "user", "assistant", "tool", "developer")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class GatewayError(Exception):
    """An error answer in OpenAI's shape."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or ERROR_TYPES.get(status, "error")
        self.headers = headers or {}


def error_body(status: int, message: str, code: str | int | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "code"}}``: what OpenAI's clients turn into their exception classes."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "error"), "code": code or status}}


def error_response(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return JSONResponse(
        error_body(status, message, code), status_code=status, headers={**extra, **(headers or {})}
    )


class SourceRef(TypedDict):
    """A ``+rag`` answer's source: ``[n]`` in the answer cites it (the completion's ``sources``)."""

    n: int
    doc_id: str
    title: str
    url: str


class Usage(TypedDict, total=False):
    """OpenAI's ``usage`` of a completion, as System A reports it."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelList(TypedDict):
    object: str  # "list"
    data: list[dict[str, object]]  # {"id", "object": "model", "created", "owned_by"}


class EmbeddingList(TypedDict):
    object: str  # "list"
    model: str
    data: list[dict[str, object]]  # {"object": "embedding", "index", "embedding"}
    usage: Usage


class FeedbackAck(TypedDict):
    id: str
    rating: int
    stored: bool


def model_entry(model_id: str, created: int) -> dict[str, object]:
    """One ``/v1/models`` entry; ``created`` in Unix seconds (a domain's production version's publish time)."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": "cbnano"}


def references(sources: list[SourceRef]) -> str:
    """The sources as text after a ``+rag`` answer, for clients that read only the message (LangChain, the
    ``llm`` CLI, Open WebUI): a blank line, ``Sources:``, then ``[n] title — url`` per source."""
    if not sources:
        return ""
    return "\n\nSources:\n" + "\n".join(
        f"[{s['n']}] {s['title']} — {s['url'] or s['doc_id']}" for s in sources
    )


def now_s() -> int:
    """A completion's ``created`` (seconds since the epoch), as OpenAI's answers carry it."""
    return int(time.time())


def first_choice(out: dict[str, Any]) -> dict[str, Any]:
    """The first choice of a completion System A answered; 503 when it has none."""
    choices = out.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise GatewayError(503, "System A answered without a completion")
    return choices[0]


def last_user(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (OpenAI's content parts: the text ones)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _check_message(m: Any) -> None:
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise GatewayError(400, f"each message needs a 'role', one of {', '.join(ROLES)}")
    content = m.get("content")
    if content is None:
        if m["role"] == "assistant" and m.get("tool_calls"):
            return  # an assistant turn that only called tools
        raise GatewayError(400, f"a {m['role']} message needs 'content' (text or a list of content parts)")
    if isinstance(content, list):
        if not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content):
            raise GatewayError(400, "content parts must be objects with a 'type'")
    elif not isinstance(content, str):
        raise GatewayError(400, "'content' must be text or a list of content parts")


def validate_completion(body: Any, kind: str) -> dict[str, Any]:
    """``body`` when it is a well-formed chat (``kind`` "chat") or completion request, else a 400 naming the
    first field that is not: the client hears about its own bad input, System A never sees it."""
    if not isinstance(body, dict):
        raise GatewayError(400, "the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise GatewayError(400, "'model' is required")
    if kind == "chat":
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise GatewayError(400, "'messages' must be a non-empty list of {role, content} objects")
        for m in msgs:
            _check_message(m)
    elif not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
        raise GatewayError(400, "'prompt' must be a non-empty string")
    for name, lo, hi in (("max_tokens", 1, 32768), ("n", 1, 1)):
        v = body.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
            raise GatewayError(400, f"'{name}' must be a whole number between {lo} and {hi}")
    t = body.get("temperature")
    if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 2):
        raise GatewayError(400, "'temperature' must be a number between 0 and 2")
    for flag in ("stream", "references"):
        if body.get(flag) is not None and not isinstance(body[flag], bool):
            raise GatewayError(400, f"'{flag}' must be true or false")
    return body


def vector(v: Any, encoding: str) -> Any:
    """One embedding as OpenAI sends it: a list of floats, or base64 of little-endian float32."""
    if encoding == "float":
        return [float(x) for x in v]
    return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
