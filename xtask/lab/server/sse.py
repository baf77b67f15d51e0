"""Streamed completions: Server-Sent Events, one event per token at --tokens-per-second after
--first-token-delay-ms, then the finish event, the usage event if asked, and [DONE]. Chunked
on HTTP/1.1; on HTTP/1.0 the body ends when the connection closes."""

from __future__ import annotations

import argparse
import time

from .http1 import Request
from .respond import Responder, json_bytes, response_head
from .textgen import SYSTEM_FINGERPRINT, Generated


class EventEncoder:
    """The bytes of each event of one stream, framed as chunks when the response is chunked."""

    def __init__(self, gen: Generated, chunked: bool):
        self.gen = gen
        self.chunked = chunked

    def frame(self, data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data

    def event(self, obj) -> bytes:
        return self.frame(b"data: " + json_bytes(obj) + b"\n\n")

    def chunk_obj(self, choices: list, usage_val=None) -> dict:
        g = self.gen
        o = {"id": g.request_id, "object": g.chunk_kind,
             "created": g.created, "model": g.ask.model, "system_fingerprint": SYSTEM_FINGERPRINT,
             "choices": choices}
        if g.ask.include_usage:  # every chunk then has a usage field, null but in the last
            o["usage"] = usage_val
        return o

    def token(self, i: int, tok: str) -> bytes:
        if self.gen.ask.chat:
            # The first delta also names the role, as OpenAI's does.
            delta = {"role": "assistant", "content": tok, "refusal": None} if i == 0 else {"content": tok}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        else:
            choice = {"index": 0, "text": tok, "logprobs": None, "finish_reason": None}
        return self.event(self.chunk_obj([choice]))

    def tail(self) -> bytes:
        """Everything after the last token, up to the end of the body."""
        finish = self.gen.finish_reason
        if self.gen.ask.chat:
            last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}
        else:
            last = {"index": 0, "text": "", "logprobs": None, "finish_reason": finish}
        tail = self.event(self.chunk_obj([last]))
        if self.gen.ask.include_usage:
            tail += self.event(self.chunk_obj([], self.gen.usage))
        tail += self.frame(b"data: [DONE]\n\n")
        if self.chunked:
            tail += b"0\r\n\r\n"
        return tail


def stream(respond: Responder, req: Request, gen: Generated, args: argparse.Namespace,
           quota_headers: list[tuple[str, str]]) -> int:
    chunked = req.version == "HTTP/1.1"
    if not chunked:
        req.keep_alive = False  # HTTP/1.0: the body ends when the connection closes
    headers = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
               ("x-request-id", gen.request_id)] + quota_headers
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    head = response_head(req, 200, headers, close=not req.keep_alive)
    events = EventEncoder(gen, chunked)

    delay = args.first_token_delay_ms / 1000.0
    tps = args.tokens_per_second
    if delay > 0:
        time.sleep(delay)
    respond.status = 200
    t0 = time.monotonic()
    pending = head  # the head goes out together with the first token
    for i, tok in enumerate(gen.tokens):
        if tps > 0 and i > 0:
            _sleep_until(t0 + i / tps)
        respond.write(pending + events.token(i, tok))
        pending = b""
    respond.write(pending + events.tail())
    return 200


def _sleep_until(due: float) -> None:
    """Token i is due i/tps after the first, on the monotonic clock: a slow write does not
    push every later token back."""
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
