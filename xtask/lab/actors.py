#!/usr/bin/env python3
"""Siphon lab traffic actors: one process = one labelled traffic source.

    python3 xtask/lab/actors.py KIND --actor-id ID --base-url URL --keys K1[,K2,...]
        --duration SECONDS --seed N --log FILE [--ca-file PEM]
        [--source-ips IP1,IP2,...] [--concurrency N] [--proxy URL] [--trace CSV]
        [--time-scale X] [--max-requests N] [kind-specific options, see --help]

KIND is one of
  human       benign chat sessions from the Azure conversation trace (openai SDK)
  app         benign automated code-assistant integration from the Azure code
              trace: bursty, big prompts, short outputs, mostly non-streaming
              (python-requests, app User-Agent)
  harvester   distillation harvesting, --level h1 (one key, one IP, back to
              back; curl), h2 (jittered, 1-2 keys, human-like pauses; openai
              SDK), h3 (hydra: every key on its own head, heads spread over
              --source-ips, each key under --rate-per-key; openai SDK)
  relay-user  many end users behind an LLM router (LiteLLM base URL, plain
              http), each modest, the sum large, long outputs (openai SDK)
  far-client  moderate harvesting through a SOCKS5 relay (--proxy
              socks5h://relay:1080), curl
  batch       benign batch summarisation: long inputs, short outputs, one key,
              at its client-side limit (--rate-per-key), non-streaming
  backend     benign application backend: many end users through one key
              (--rate-per-key arrivals, --concurrency in flight), streamed
  ci          benign CI evaluation suite: idle (--start-after), a burst of
              --suite-size fixed prompts at --rate-per-key, then idle
  agent       benign agent loops (one per key): growing context, short to
              medium outputs, tool time 2-20 s / --time-scale
  (see actorlib/population.py for the benign heavy users)

The log (--log) gets one JSON line per HTTP request, flushed per line.  The
run ends at --duration or --max-requests, whichever comes first (requests in
flight at the deadline get --drain-seconds), or on SIGTERM/SIGINT (in-flight
requests get 1 s, then are logged with error "interrupted: ...").  Exit status:
0; 2 on bad arguments; 1 if not a single request succeeded (after SIGTERM/
SIGINT only if some request failed for another reason than being cut short).
A one-line JSON summary is printed on stderr at the end.

Log fields: ts_start, ts_end, actor_id, kind, client_lib, key_index,
source_ip, status, stream, max_tokens, prompt_chars, response_bytes (body
bytes received), ttfb_s (first body byte), error; plus labels: endpoint,
model, and per kind level/worker/head (harvester), session/turn/think_s/attempt
(human), job/attempt (app), head (relay-user), worker (far-client).
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import random
import sys
import threading
import urllib.parse
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from actorlib import clients, kinds, population  # noqa: E402
from actorlib.runtime import Runtime  # noqa: E402

RUNNERS = {**kinds.RUNNERS, **population.RUNNERS}
KINDS = tuple(RUNNERS)
LEVELS = ("h1", "h2", "h3")

TRACE_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "llm-traces"
DEFAULT_TRACE = {"human": "AzureLLMInferenceTrace_conv.csv", "app": "AzureLLMInferenceTrace_code.csv"}

# per-kind defaults of the options left unset on the command line
DEFAULTS = {
    "human": dict(client="openai-python", concurrency=3, stream_prob=0.85, trace_fraction=0.003),
    "app": dict(client="requests", concurrency=4, stream_prob=0.1, trace_fraction=0.05),
    "harvester:h1": dict(client="curl", concurrency=4, stream_prob=0.3),
    "harvester:h2": dict(client="openai-python", concurrency=2, stream_prob=0.5, gap_median=4.0,
                         pause_prob=0.08),
    "harvester:h3": dict(client="openai-python", concurrency=None, stream_prob=0.5, rate_per_key=20.0),
    "relay-user": dict(client="openai-python", concurrency=8, stream_prob=0.5, rate_per_key=4.0,
                       min_tokens=768),
    "far-client": dict(client="curl", concurrency=2, stream_prob=0.3, gap_median=2.0, min_tokens=512),
    "batch": dict(client="openai-python", concurrency=4, stream_prob=0.0, rate_per_key=90.0, min_tokens=64,
                  max_tokens=256),
    "backend": dict(client="openai-python", concurrency=16, stream_prob=0.8, rate_per_key=50.0,
                    min_tokens=40, max_tokens=900),
    "ci": dict(client="requests", concurrency=4, stream_prob=0.0, rate_per_key=100.0, min_tokens=4,
               max_tokens=256, suite_size=120, start_after=150.0),
    "agent": dict(client="openai-python", concurrency=1, stream_prob=0.3, rate_per_key=60.0, min_tokens=30,
                  max_tokens=700),
}
COMMON_DEFAULTS = dict(min_tokens=1024, max_tokens=2048, gap_median=3.0, pause_prob=0.0,
                       rate_per_key=20.0, trace_fraction=0.05)


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="actors.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=KINDS)
    g = p.add_argument_group("common")
    g.add_argument("--actor-id", required=True, help="label copied to every log line")
    g.add_argument("--base-url", required=True,
                   help="e.g. https://ingress.lab:8443 (the actor appends /v1/...)")
    g.add_argument("--keys", required=True, help="comma-separated API keys (the log records indexes only)")
    g.add_argument("--duration", type=float, required=True, help="seconds; no request starts after this")
    g.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    g.add_argument("--log", required=True, help="JSON-lines request log (appended)")
    g.add_argument("--ca-file", help="PEM CA bundle to verify an https base URL against")
    g.add_argument("--source-ips", default="", help="comma-separated local addresses to bind connections to")
    g.add_argument("--concurrency", type=int, help="max sessions/workers/requests in flight (per-kind default)")
    g.add_argument("--proxy", help="proxy URL, e.g. socks5h://relay2.lab:1080 (socks needs the curl client)")
    g.add_argument("--trace", help="Azure trace CSV (human: _conv, app: _code; default: shared/data/llm-traces)")
    g.add_argument("--time-scale", type=float, default=1.0,
                   help="divide think times, trace gaps and pauses by this (20 = 20x faster); "
                        "--rate-per-key and server Retry-After are real time")
    g.add_argument("--max-requests", type=int, help="stop after starting this many requests")
    k = p.add_argument_group("kind-specific")
    k.add_argument("--level", choices=LEVELS, help="harvester level (required for harvester)")
    k.add_argument("--rate-per-key", type=float,
                   help="requests per minute per key/head, real time (h3 default 20, relay-user 4)")
    k.add_argument("--client", choices=("openai-python", "openai", "curl", "requests"),
                   help="override the kind's HTTP client")
    k.add_argument("--model", default="siphon-lab-1", help="model name sent in requests")
    k.add_argument("--stream-prob", type=float, help="probability a request streams (per-kind default)")
    k.add_argument("--min-tokens", type=int, help="harvesting kinds: smallest max_tokens (1024; relay-user 768, far-client 512)")
    k.add_argument("--max-tokens", type=int, help="harvesting kinds: largest max_tokens (default 2048)")
    k.add_argument("--trace-fraction", type=float,
                   help="probability a trace row becomes an arrival (human 0.003 sessions, app 0.05 requests)")
    k.add_argument("--user-order", choices=("weighted", "round-robin"), default="weighted",
                   help="human: which key a new session gets: weighted (1/sqrt(rank): regulars and "
                        "occasional users) or round-robin (each key once before any twice)")
    k.add_argument("--max-turns", type=int, default=8, help="human: turns per session, at most")
    k.add_argument("--think-median", type=float, default=20.0, help="human: median think time, seconds")
    k.add_argument("--think-sigma", type=float, default=1.0, help="human: lognormal sigma of think time")
    k.add_argument("--max-prompt-words", type=int, default=2000, help="human/app: prompt size cap, words")
    k.add_argument("--gap-median", type=float, help="h2/far-client: median gap between requests, seconds")
    k.add_argument("--pause-prob", type=float, help="h2: probability of a 20-120 s pause after a request")
    k.add_argument("--suite-size", type=int, help="ci: prompts in the evaluation suite (default 120)")
    k.add_argument("--start-after", type=float,
                   help="ci: idle seconds in the world before the suite runs (default 150; / --time-scale)")
    k.add_argument("--request-timeout", type=float, default=300.0, help="per-request timeout, seconds")
    k.add_argument("--drain-seconds", type=float, default=5.0,
                   help="grace for requests in flight at --duration (SIGTERM: 1 s)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    a = p.parse_args(argv)
    if a.kind == "harvester" and not a.level:
        p.error("harvester needs --level h1|h2|h3")
    if a.kind != "harvester" and a.level:
        p.error("--level is for harvester only")
    prof = DEFAULTS[f"harvester:{a.level}" if a.kind == "harvester" else a.kind]
    for name, val in {**COMMON_DEFAULTS, **prof}.items():
        if getattr(a, name, None) is None:
            setattr(a, name, val)
    if a.client == "openai":
        a.client = "openai-python"

    try:
        a.base_url = clients.normalize_base_url(a.base_url)
    except ValueError as e:
        p.error(str(e))
    a.key_list = _csv(a.keys)
    if not a.key_list:
        p.error("--keys: at least one key")
    a.ip_list = _csv(a.source_ips)
    for ip in a.ip_list:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            p.error(f"--source-ips: not an IP address: {ip!r}")
    if not a.duration > 0:
        p.error("--duration must be > 0")
    if a.max_requests is not None and a.max_requests < 1:
        p.error("--max-requests must be >= 1")
    if not a.time_scale > 0:
        p.error("--time-scale must be > 0")
    if a.concurrency is None:  # h3: one worker per head, within reason
        a.concurrency = min(32, max(4, len(a.key_list)))
    if a.concurrency < 1:
        p.error("--concurrency must be >= 1")
    if not a.rate_per_key > 0:
        p.error("--rate-per-key must be > 0")
    if not 0.0 <= a.stream_prob <= 1.0 or not 0.0 <= a.pause_prob <= 1.0:
        p.error("--stream-prob and --pause-prob must be in [0, 1]")
    if not 0.0 < a.trace_fraction <= 1.0:
        p.error("--trace-fraction must be in (0, 1]")
    if not 1 <= a.min_tokens <= a.max_tokens:
        p.error("need 1 <= --min-tokens <= --max-tokens")
    if a.max_turns < 1 or a.max_prompt_words < 10 or a.think_median <= 0 or a.gap_median <= 0:
        p.error("--max-turns >= 1, --max-prompt-words >= 10, --think-median > 0, --gap-median > 0")
    if a.kind == "ci" and (a.suite_size < 1 or a.start_after < 0):
        p.error("--suite-size >= 1 and --start-after >= 0")
    if a.request_timeout <= 0 or a.drain_seconds < 0:
        p.error("--request-timeout > 0 and --drain-seconds >= 0")
    if a.ca_file and not os.path.isfile(a.ca_file):
        p.error(f"--ca-file: no such file: {a.ca_file}")
    if a.kind in DEFAULT_TRACE:
        if not a.trace:
            a.trace = str(TRACE_DIR / DEFAULT_TRACE[a.kind])
        if not os.path.isfile(a.trace):
            p.error(f"--trace: no such file: {a.trace}")
    if a.proxy:
        u = urllib.parse.urlsplit(a.proxy)
        if u.scheme not in ("http", "https", "socks4", "socks4a", "socks5", "socks5h") or not u.hostname:
            p.error(f"--proxy: unsupported proxy URL {a.proxy!r}")
        if u.scheme.startswith("socks"):
            need = {"openai-python": "socksio", "requests": "socks"}.get(a.client)
            if need and importlib.util.find_spec(need) is None:
                p.error(f"--proxy {u.scheme}:// with client {a.client} needs the python module "
                        f"'{need}', which is not installed; use --client curl")
    if a.kind == "far-client" and not a.proxy:
        print("actors.py: warning: far-client without --proxy goes direct", file=sys.stderr)
    if a.kind == "harvester" and a.level == "h3" and len(a.key_list) < 2:
        print("actors.py: warning: h3 (hydra) with a single key", file=sys.stderr)
    if a.client == "openai-python" and importlib.util.find_spec("openai") is None:
        p.error("the openai package is not installed (pip install openai)")
    if a.client == "requests" and importlib.util.find_spec("requests") is None:
        p.error("the requests package is not installed (pip install requests)")
    if a.client == "curl":
        import shutil  # noqa: PLC0415

        if shutil.which("curl") is None:
            p.error("curl is not on PATH")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    rt = Runtime(actor_id=a.actor_id, kind=a.kind, duration=a.duration, max_requests=a.max_requests,
                 log_path=a.log, drain_s=a.drain_seconds)
    rt.install_signal_handlers()
    cfg = clients.Config(base_url=a.base_url, ca_file=a.ca_file, proxy=a.proxy, timeout=a.request_timeout)
    ctx = kinds.Ctx(args=a, rt=rt, cfg=cfg, keys=a.key_list, ips=a.ip_list, lib=a.client, model=a.model,
                    scale=a.time_scale, rng_lock=threading.Lock(),
                    # same seed + same actor => same run; different actors never share a prompt stream
                    rng=random.Random(f"{a.seed}:{a.kind}:{a.level}:{a.actor_id}"))
    try:
        RUNNERS[a.kind](ctx)
    except (OSError, ValueError) as e:
        print(f"actors.py: {e}", file=sys.stderr)
        rt.log.close()
        return 2
    rt.supervise()
    return rt.finish()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # do not wait for abandoned daemon threads
