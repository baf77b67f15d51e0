"""POST /v1/chat/completions and /v1/completions: the request's JSON checked as OpenAI does,
fake tokens drawn, and the answer either whole (after the simulated generation time) or
streamed (sse.py)."""

from __future__ import annotations

import argparse
import json
import time

from . import sse
from .http1 import Request
from .respond import Responder, error_body, json_bytes
from .state import State
from .textgen import SYSTEM_FINGERPRINT, CompletionAsk, Generated, count_words, generate


class InvalidRequest(Exception):
    """Answered 400 invalid_request_error; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


def answer(state: State, respond: Responder, req: Request, path: str, fields: dict,
           quota_headers: list[tuple[str, str]]) -> int:
    try:
        ask = parse_ask(req.body, path == "/v1/chat/completions", state, fields)
    except InvalidRequest as e:
        fields["error"] = e.message
        return respond.send(req, 400, error_body(e.message, "invalid_request_error", None, e.param))
    gen = generate(state.generator, ask)
    fields.update(stream=ask.stream, output_tokens=len(gen.tokens), finish_reason=gen.finish_reason,
                  request_id=gen.request_id)
    if ask.stream:
        return sse.stream(respond, req, gen, state.args, quota_headers)
    return _send_whole(respond, req, gen, state.args, quota_headers)


def parse_ask(body: bytes, chat: bool, state: State, fields: dict) -> CompletionAsk:
    """Check the JSON body; raises InvalidRequest. The model and prompt_tokens log fields are
    filled as soon as they are known, also when a later check fails."""
    try:
        payload = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidRequest(f"Invalid JSON body: {e}")
    if not isinstance(payload, dict):
        raise InvalidRequest("Request body must be a JSON object")
    model = payload.get("model") or state.models[0]
    if not isinstance(model, str):
        raise InvalidRequest("model must be a string", "model")
    fields["model"] = model
    prompt_tokens = _prompt_tokens(payload, chat)
    fields["prompt_tokens"] = prompt_tokens
    max_tokens = _max_tokens(payload, chat, state.args.max_output_tokens)
    stream = bool(payload.get("stream", False))
    so = payload.get("stream_options")
    include_usage = bool(stream and isinstance(so, dict) and so.get("include_usage"))
    return CompletionAsk(chat, model, prompt_tokens, max_tokens, stream, include_usage)


def _prompt_tokens(payload: dict, chat: bool) -> int:
    if chat:
        msgs = payload.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise InvalidRequest("'messages' must be a non-empty array", "messages")
        return count_words(msgs)
    if "prompt" not in payload:
        raise InvalidRequest("'prompt' is required", "prompt")
    return count_words(payload.get("prompt"))


def _max_tokens(payload: dict, chat: bool, cap: int) -> int | None:
    """max_completion_tokens (chat only, OpenAI's newer name) else max_tokens, capped at
    --max-output-tokens; None when neither is given."""
    mt = payload.get("max_completion_tokens") if chat else None
    if mt is None:
        mt = payload.get("max_tokens")
    if mt is not None:
        if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
            raise InvalidRequest("max_tokens must be a positive integer", "max_tokens")
        mt = min(mt, cap)
    return mt


def _send_whole(respond: Responder, req: Request, gen: Generated, args: argparse.Namespace,
                quota_headers: list[tuple[str, str]]) -> int:
    text = "".join(gen.tokens)
    if gen.ask.chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                  "logprobs": None, "finish_reason": gen.finish_reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": gen.finish_reason}
    obj = {"id": gen.request_id, "object": gen.object_kind,
           "created": gen.created, "model": gen.ask.model, "system_fingerprint": SYSTEM_FINGERPRINT,
           "choices": [choice], "usage": gen.usage}
    body = json_bytes(obj)
    # A non-streamed answer takes as long as its stream would: the first-token delay, then
    # the rest of the tokens at the set rate.
    delay = args.first_token_delay_ms / 1000.0
    tps = args.tokens_per_second
    generation_s = delay + ((len(gen.tokens) - 1) / tps if tps > 0 else 0.0)
    if generation_s > 0:
        time.sleep(generation_s)
    return respond.send(req, 200, body, extra_headers=[("x-request-id", gen.request_id)] + quota_headers)
