"""Answering a fully read request: the route and method, the API key, the per-key rate limit,
then /health, /v1/models or a completion. Each step fills the request's log fields."""

from __future__ import annotations

import math

from . import completions
from .http1 import Request
from .respond import Responder, error_body, json_bytes
from .state import State

COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions")


def dispatch(state: State, respond: Responder, req: Request, fields: dict, peer_ip: str) -> int:
    """Answer `req`; fill `fields` (log fields); return the status."""
    path = req.path.rstrip("/") or "/"
    get_like = req.method in ("GET", "HEAD")
    if path == "/health":  # never needs a key, never rate limited
        if not get_like:
            return respond.method_not_allowed(req, "GET, HEAD")
        return respond.send(req, 200, json_bytes({"status": "ok"}))
    is_models = path == "/v1/models" or path.startswith("/v1/models/")
    if path not in COMPLETION_PATHS and not is_models:
        return respond.send(req, 404, error_body(f"Unknown path {req.path}", "invalid_request_error", "not_found"))
    if path in COMPLETION_PATHS and req.method != "POST":
        return respond.method_not_allowed(req, "POST")
    if is_models and not get_like:
        return respond.method_not_allowed(req, "GET, HEAD")

    key_id = None
    if state.keys:
        key = presented_key(req)
        key_id = state.key_index.get(key) if key else None
        if key_id is None:
            return _unauthorized(respond, req, fields, missing=not key)
    fields["key_id"] = key_id

    # Per key; per peer address when the server has no keys.
    bucket = ("key", key_id) if key_id is not None else ("ip", peer_ip)
    allowed, wait_s, remaining = state.rate_check(bucket)
    quota_headers = _quota_headers(state, remaining)
    if not allowed:
        return _rate_limited(respond, req, fields, wait_s, quota_headers)

    if is_models:
        return _models(state, respond, req, path, fields, quota_headers)
    return completions.answer(state, respond, req, path, fields, quota_headers)


def presented_key(req: Request) -> str | None:
    """The API key as OpenAI-style clients send it: a bearer token, else x-api-key or api-key
    (Azure style)."""
    key = None
    auth = req.header("authorization")
    if auth:
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() == "bearer":
            key = cred.strip()
    if not key:
        key = req.header("x-api-key") or req.header("api-key")
    return key


def _unauthorized(respond: Responder, req: Request, fields: dict, missing: bool) -> int:
    msg = "Missing API key" if missing else "Incorrect API key provided"
    fields["error"] = msg
    return respond.send(
        req, 401, error_body(msg, "invalid_request_error", "invalid_api_key"),
        extra_headers=[("WWW-Authenticate", 'Bearer realm="siphon-lab"')])


def _quota_headers(state: State, remaining: int) -> list[tuple[str, str]]:
    """The x-ratelimit-* headers OpenAI sends, when a rate limit is set."""
    if state.args.rate_limit_rpm > 0:
        return [
            ("x-ratelimit-limit-requests", f"{state.args.rate_limit_rpm:g}"),
            ("x-ratelimit-remaining-requests", str(max(0, remaining))),
        ]
    return []


def _rate_limited(respond: Responder, req: Request, fields: dict, wait_s: float,
                  quota_headers: list[tuple[str, str]]) -> int:
    retry = max(1, math.ceil(wait_s))
    fields["error"] = "rate limited"
    return respond.send(
        req, 429,
        error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
        extra_headers=[("Retry-After", str(retry)),
                       ("x-ratelimit-reset-requests", f"{wait_s:.3f}s")] + quota_headers,
    )


def _model_obj(state: State, mid: str) -> dict:
    return {"id": mid, "object": "model", "created": state.created, "owned_by": "siphon-lab"}


def _models(state: State, respond: Responder, req: Request, path: str, fields: dict,
            quota_headers: list[tuple[str, str]]) -> int:
    """GET /v1/models (the list) and /v1/models/<id> (one, or 404)."""
    if path == "/v1/models":
        body = json_bytes({"object": "list", "data": [_model_obj(state, m) for m in state.models]})
        return respond.send(req, 200, body, extra_headers=quota_headers)
    mid = path[len("/v1/models/"):]
    fields["model"] = mid
    if mid in state.models:
        return respond.send(req, 200, json_bytes(_model_obj(state, mid)), extra_headers=quota_headers)
    return respond.send(req, 404, error_body(f"The model '{mid}' does not exist",
                                             "invalid_request_error", "model_not_found", "model"),
                        extra_headers=quota_headers)
