"""Fake generation: words from a fixed vocabulary (no model), as many as max_tokens asks or a
lognormal number, prompt token counts estimated as word counts, and what one completion
produced (the same whether it is sent whole or streamed)."""

from __future__ import annotations

import argparse
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass

VOCAB = (
    "the of and to in is that for it as with was on be by at this from or an "
    "are which not have had but were can all one their there been has more "
    "packet flow socket kernel latency token stream model gpu tensor batch "
    "cluster node queue buffer window route probe map ring event trace span "
    "request response header body chunk byte frame link port peer host rack "
    "quick silent river stone bright amber cedar delta echo falcon granite "
    "harbor island juniper kestrel lantern meadow nimbus orchid pebble quartz"
).split()

SYSTEM_FINGERPRINT = "fp_siphon_lab"


class TokenGenerator:
    """One seeded RNG shared by every connection (behind a lock), so that one seed and one
    request order give the same outputs."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()

    def draw(self, n_tokens: int | None) -> tuple[list[str], str]:
        """Return (tokens, finish_reason): exactly `n_tokens` ("length"), or with None a
        lognormal count capped at --max-output-tokens ("stop"). Tokens after the first carry
        their leading space, so joining them gives the text."""
        a = self.args
        with self.lock:
            if n_tokens is None:
                mu = math.log(max(1.0, a.output_len_median))
                n = int(round(self.rng.lognormvariate(mu, a.output_len_sigma)))
                n = max(1, min(a.max_output_tokens, n))
                finish = "stop"
            else:
                n = n_tokens
                finish = "length"
            words = [self.rng.choice(VOCAB) for _ in range(n)]
        toks = [w if i == 0 else " " + w for i, w in enumerate(words)]
        return toks, finish


def count_words(x) -> int:
    """Prompt tokens of a prompt or a messages array: words of every text, one per token id."""
    if x is None:
        return 0
    if isinstance(x, str):
        return len(x.split())
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return 1  # a token id
    if isinstance(x, list):
        return sum(count_words(i) for i in x)
    if isinstance(x, dict):
        n = 0
        for k in ("content", "text", "name"):
            if k in x:
                n += count_words(x[k])
        return n
    return 0


@dataclass
class CompletionAsk:
    """What a valid completion request asks for."""

    chat: bool
    model: str
    prompt_tokens: int
    max_tokens: int | None  # None: a lognormal length (TokenGenerator.draw)
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage


@dataclass
class Generated:
    """One completion's output, the same whether sent whole or streamed."""

    ask: CompletionAsk
    request_id: str
    created: int
    tokens: list[str]
    finish_reason: str
    usage: dict

    @property
    def object_kind(self) -> str:
        return "chat.completion" if self.ask.chat else "text_completion"

    @property
    def chunk_kind(self) -> str:
        return "chat.completion.chunk" if self.ask.chat else "text_completion"


def generate(generator: TokenGenerator, ask: CompletionAsk) -> Generated:
    toks, finish = generator.draw(ask.max_tokens)
    rid = ("chatcmpl-" if ask.chat else "cmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    usage = {"prompt_tokens": ask.prompt_tokens, "completion_tokens": len(toks),
             "total_tokens": ask.prompt_tokens + len(toks)}
    return Generated(ask, rid, created, toks, finish, usage)
