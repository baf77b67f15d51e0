"""The server's command-line flags (the lab and agent/tests/e2e_http.rs pass them)."""

from __future__ import annotations

import argparse


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Siphon lab OpenAI-compatible fake inference server (stdlib only)")
    p.add_argument("--listen", action="append", default=None,
                   help="address to listen on; repeatable; '::' is dual-stack IPv4+IPv6 (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0 = pick a free one; see --ready-file)")
    p.add_argument("--model", default="siphon-lab-1", help="comma-separated model ids served by /v1/models")
    p.add_argument("--tokens-per-second", type=float, default=200.0, help="token pacing, 0 = no delay")
    p.add_argument("--first-token-delay-ms", type=float, default=20.0,
                   help="delay before the first response byte of a completion")
    p.add_argument("--max-output-tokens", type=int, default=4096, help="cap on output tokens")
    p.add_argument("--output-len-median", type=float, default=128.0,
                   help="median of the lognormal output length when max_tokens is absent")
    p.add_argument("--output-len-sigma", type=float, default=0.8, help="sigma of the lognormal output length")
    p.add_argument("--seed", type=int, default=0, help="RNG seed for output lengths and words")
    p.add_argument("--keys-file", help="file with one API key per line ('#' comments allowed)")
    p.add_argument("--keys", help="comma-separated API keys")
    p.add_argument("--rate-limit-rpm", type=float, default=0.0, help="per-key requests per minute, 0 = off")
    p.add_argument("--rate-limit-burst", type=float, default=0.0,
                   help="token bucket size (default: the rpm value, at least 1)")
    p.add_argument("--log", help="JSON-lines ground-truth request log (appended)")
    p.add_argument("--ready-file", help="written (atomically, JSON) once listening")
    p.add_argument("--idle-timeout", type=float, default=60.0, help="socket timeout in seconds")
    p.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    p.add_argument("--linger-seconds", type=float, default=2.0,
                   help="after closing our side, read what the peer still sends for at most this long")
    p.add_argument("--shutdown-grace", type=float, default=5.0,
                   help="seconds to let in-flight requests finish on SIGTERM/SIGINT")
    a = p.parse_args(argv)
    if not a.listen:
        a.listen = ["127.0.0.1"]
    if a.max_output_tokens < 1:
        p.error("--max-output-tokens must be >= 1")
    if a.tokens_per_second < 0 or a.first_token_delay_ms < 0:
        p.error("delays must be >= 0")
    return a
