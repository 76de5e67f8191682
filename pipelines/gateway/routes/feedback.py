"""``POST /v1/feedback`` ``{"id", "rating": 1 | -1, "comment"?}``: a rating of a completion's answer."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from pipelines.gateway.context import Body, User, gateway_of
from pipelines.gateway.shapes import FeedbackAck, GatewayError

router = APIRouter()


@router.post("/v1/feedback", response_model=None)
async def feedback(request: Request, user: User, body: Body) -> FeedbackAck:
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise GatewayError(400, "'id' (a completion id) is required")
    rating = body.get("rating")
    if rating not in (1, -1) or isinstance(rating, bool):
        raise GatewayError(400, "'rating' must be 1 or -1")
    comment = body.get("comment") or ""
    if not isinstance(comment, str) or len(comment) > 4000:
        raise GatewayError(400, "'comment' must be text of at most 4000 characters")
    store = gateway_of(request).store
    if not await run_in_threadpool(store.feedback, body["id"], user, int(rating), comment):
        raise GatewayError(404, f"no completion {body['id']!r}")
    return {"id": body["id"], "rating": int(rating), "stored": True}
