"""What every connection of the server shares: the API keys, the models, the rate limit
buckets, the token generator, the log, and the open connections (for the graceful shutdown)."""

from __future__ import annotations

import argparse
import itertools
import threading
import time
from typing import TYPE_CHECKING

from .requestlog import RequestLog
from .textgen import TokenGenerator

if TYPE_CHECKING:
    from .handler import Handler


class TokenBucket:
    def __init__(self, rpm: float, burst: float):
        self.rate = rpm / 60.0
        self.capacity = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> tuple[bool, float, int]:
        """Return (allowed, seconds until next token, remaining)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True, 0.0, int(self.tokens)
        return False, (1.0 - self.tokens) / self.rate, 0


def load_keys(args: argparse.Namespace) -> list[str]:
    """--keys-file (one per line, '#' comments) then --keys; a key's id is its first position."""
    keys: list[str] = []
    if args.keys_file:
        with open(args.keys_file, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.append(line)
    if args.keys:
        keys.extend(k.strip() for k in args.keys.split(",") if k.strip())
    return keys


class State:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.keys = load_keys(args)
        self.key_index: dict[str, int] = {}
        for i, k in enumerate(self.keys):
            self.key_index.setdefault(k, i)
        self.models = [m.strip() for m in args.model.split(",") if m.strip()] or ["siphon-lab-1"]
        self.created = int(time.time())
        self.generator = TokenGenerator(args)
        self.buckets: dict[object, TokenBucket] = {}
        self.bucket_lock = threading.Lock()
        self.log = RequestLog(args.log)
        self.conn_ids = itertools.count(1)
        self.conn_lock = threading.Lock()
        self.conns: dict[int, Handler] = {}
        self.stopping = threading.Event()

    def next_conn_id(self) -> int:
        with self.conn_lock:
            return next(self.conn_ids)

    def rate_check(self, bucket_key: object) -> tuple[bool, float, int]:
        """(allowed, seconds until the next request is allowed, requests remaining); always
        allowed, remaining -1, with no --rate-limit-rpm."""
        rpm = self.args.rate_limit_rpm
        if rpm <= 0:
            return True, 0.0, -1
        burst = self.args.rate_limit_burst if self.args.rate_limit_burst > 0 else max(1.0, rpm)
        with self.bucket_lock:
            b = self.buckets.get(bucket_key)
            if b is None:
                b = self.buckets[bucket_key] = TokenBucket(rpm, burst)
            return b.take()
