#!/usr/bin/env python3
"""Siphon lab: a small, real OpenAI-compatible HTTP/1.1 inference server.

Stdlib only (Python >= 3.11). It produces fake tokens from a fixed vocabulary
(no model) and writes a ground-truth JSON-lines request log whose byte counts
are exact, so that end-to-end tests of the network monitor can compare what the
monitor saw on the wire with what really crossed the socket.

Endpoints:
    POST /v1/chat/completions     (stream and non-stream)
    POST /v1/completions          (stream and non-stream)
    GET  /v1/models
    GET  /v1/models/<id>
    GET  /health                  (never needs a key, never rate limited)
HEAD is accepted wherever GET is.

Exactness of the log:
  * Reading: every connection has its own buffered reader (ConnReader) on top
    of socket.recv().  The HTTP parser only consumes bytes through it, and the
    reader keeps an absolute "consumed" offset.  request_bytes is the
    difference of that offset between the start and the end of the parse of
    one request (leading empty lines, request line, headers, blank line, body
    with chunk framing and trailers if the body was chunked).  Bytes that
    recv() read ahead (pipelining) stay in the buffer and count towards the
    next request.  When a request fails to parse (400/413/431, peer closed or
    timed out mid-request) the connection is closed and everything received
    so far is counted in that request's entry.  Bytes that arrive after we
    decided to close (read during a bounded "lingering close", --linger-seconds)
    get one extra entry per connection: status null, "error" set.  So, per
    connection, the sum of request_bytes equals every byte the server read.
  * Writing: every byte goes through ConnWriter, which loops over
    socket.send() and adds up what send() returned, so response_bytes is the
    number of bytes the kernel accepted for this response (status line,
    headers, body, chunk framing, and any "100 Continue" interim response sent
    for this request), even if the client disconnects part way through.
  * ts_start is the time the recv() that returned the first byte of the
    request head completed (for a pipelined request that is the time the chunk
    containing it arrived, which can be before the previous response was sent).
    ts_first_byte is the time the first send() of the response returned, ts_end
    the time the last one returned.
"""

from __future__ import annotations

import argparse
import collections
import email.utils
import itertools
import json
import math
import os
import random
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid

from jsonlines import JsonLines

SERVER_NAME = "siphon-lab-inference/1.0"
MAX_LINE = 65536
MAX_HEADERS = 100

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}

VOCAB = (
    "the of and to in is that for it as with was on be by at this from or an "
    "are which not have had but were can all one their there been has more "
    "packet flow socket kernel latency token stream model gpu tensor batch "
    "cluster node queue buffer window route probe map ring event trace span "
    "request response header body chunk byte frame link port peer host rack "
    "quick silent river stone bright amber cedar delta echo falcon granite "
    "harbor island juniper kestrel lantern meadow nimbus orchid pebble quartz"
).split()


# --------------------------------------------------------------------------
# Connection I/O with exact accounting
# --------------------------------------------------------------------------


class PeerClosed(Exception):
    """The peer closed the connection (EOF) while we needed more bytes."""


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ConnReader:
    """Buffered reader over a socket that knows exactly what was consumed."""

    def __init__(self, sock: socket.socket, bufsize: int = 65536):
        self.sock = sock
        self.bufsize = bufsize
        self.buf = bytearray()
        self.pos = 0  # index of the first unconsumed byte in buf
        self.consumed = 0  # absolute number of bytes consumed so far
        self.received = 0  # absolute number of bytes received so far
        self.eof = False
        # (absolute end offset, unix time) of every recv() chunk not yet
        # fully consumed
        self.chunks: collections.deque[tuple[int, float]] = collections.deque()

    def available(self) -> int:
        return len(self.buf) - self.pos

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self.sock.recv(self.bufsize)
        now = time.time()
        if not data:
            self.eof = True
            return False
        if self.pos > 65536 and self.pos * 2 > len(self.buf):
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += data
        self.received += len(data)
        self.chunks.append((self.received, now))
        return True

    def wait_first_byte(self) -> float | None:
        """Block until one unconsumed byte exists; return the unix time its
        recv() chunk arrived, or None on EOF."""
        while self.available() == 0:
            if not self._fill():
                return None
        while self.chunks and self.chunks[0][0] <= self.consumed:
            self.chunks.popleft()
        return self.chunks[0][1] if self.chunks else time.time()

    def _consume(self, n: int) -> bytes:
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        self.consumed += n
        return out

    def readline(self, limit: int = MAX_LINE) -> bytes:
        """Return one line including b'\\n'. Raises BadRequest if longer than
        limit, PeerClosed on EOF before a full line."""
        scanned = 0  # bytes after pos already known to contain no b'\\n'
        while True:
            idx = self.buf.find(b"\n", self.pos + scanned)
            if idx >= 0:
                n = idx - self.pos + 1
                if n > limit:
                    raise BadRequest(431, "line too long")
                return self._consume(n)
            scanned = self.available()
            if scanned > limit:
                raise BadRequest(431, "line too long")
            if not self._fill():  # may compact buf: only relative offsets kept
                raise PeerClosed()

    def consume_all_buffered(self) -> int:
        """Mark every received-but-unconsumed byte as consumed."""
        n = self.available()
        self._consume(n)
        return n

    def read_exact(self, n: int) -> bytes:
        while self.available() < n:
            if not self._fill():
                raise PeerClosed()
        return self._consume(n)

    def unconsumed_received(self) -> int:
        return self.received - self.consumed


class ConnWriter:
    """Writes to a socket, counting the bytes the kernel accepted."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.total = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.sock.send(view)
            now = time.time()
            if n <= 0:  # pragma: no cover - send() raises rather than 0
                raise ConnectionError("send returned 0")
            self.total += n
            if self.first_ts is None:
                self.first_ts = now
            self.last_ts = now
            view = view[n:]


# --------------------------------------------------------------------------
# Server state: keys, rate limits, RNG, log
# --------------------------------------------------------------------------


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


class RequestLog(JsonLines):
    """The ground-truth request log (see jsonlines.py)."""


class State:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.keys: list[str] = []
        if args.keys_file:
            with open(args.keys_file, encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        self.keys.append(line)
        if args.keys:
            self.keys.extend(k.strip() for k in args.keys.split(",") if k.strip())
        self.key_index: dict[str, int] = {}
        for i, k in enumerate(self.keys):
            self.key_index.setdefault(k, i)
        self.models = [m.strip() for m in args.model.split(",") if m.strip()] or ["siphon-lab-1"]
        self.created = int(time.time())
        self.rng = random.Random(args.seed)
        self.rng_lock = threading.Lock()
        self.buckets: dict[object, TokenBucket] = {}
        self.bucket_lock = threading.Lock()
        self.log = RequestLog(args.log)
        self.conn_ids = itertools.count(1)
        self.conn_lock = threading.Lock()
        self.conns: dict[int, "Handler"] = {}
        self.stopping = threading.Event()

    def next_conn_id(self) -> int:
        with self.conn_lock:
            return next(self.conn_ids)

    def draw_tokens(self, n_tokens: int | None) -> tuple[list[str], str]:
        """Return (tokens, finish_reason)."""
        a = self.args
        with self.rng_lock:
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

    def rate_check(self, bucket_key: object) -> tuple[bool, float, int]:
        rpm = self.args.rate_limit_rpm
        if rpm <= 0:
            return True, 0.0, -1
        burst = self.args.rate_limit_burst if self.args.rate_limit_burst > 0 else max(1.0, rpm)
        with self.bucket_lock:
            b = self.buckets.get(bucket_key)
            if b is None:
                b = self.buckets[bucket_key] = TokenBucket(rpm, burst)
            return b.take()


# --------------------------------------------------------------------------
# Request handling
# --------------------------------------------------------------------------


def _norm_ip(ip: str) -> str:
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip.split("%", 1)[0] if ip.startswith("fe80") else ip


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def _error_body(message: str, etype: str, code: str | None = None, param=None) -> bytes:
    return _json_bytes({"error": {"message": message, "type": etype, "param": param, "code": code}})


def _count_words(x) -> int:
    if x is None:
        return 0
    if isinstance(x, str):
        return len(x.split())
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return 1  # a token id
    if isinstance(x, list):
        return sum(_count_words(i) for i in x)
    if isinstance(x, dict):
        n = 0
        for k in ("content", "text", "name"):
            if k in x:
                n += _count_words(x[k])
        return n
    return 0


class Request:
    __slots__ = (
        "method", "target", "path", "version", "headers", "body",
        "ts_start", "keep_alive", "expect_continue",
    )

    def header(self, name: str, default=None):
        return self.headers.get(name.lower(), default)


class Handler(socketserver.BaseRequestHandler):
    server: "Server"

    def setup(self) -> None:
        self.state: State = self.server.state
        self.sock: socket.socket = self.request
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.sock.settimeout(self.state.args.idle_timeout)
        self.reader = ConnReader(self.sock)
        self.writer = ConnWriter(self.sock)
        self.conn_id = self.state.next_conn_id()
        peer = self.client_address
        self.peer_ip = _norm_ip(peer[0])
        self.peer_port = peer[1]
        local = self.sock.getsockname()
        self.local_ip = _norm_ip(local[0])
        self.local_port = local[1]
        self.seq = 0
        self.idle = False
        with self.state.conn_lock:
            self.state.conns[self.conn_id] = self

    def finish(self) -> None:
        with self.state.conn_lock:
            self.state.conns.pop(self.conn_id, None)

    # -- logging -----------------------------------------------------------

    def _log(self, entry_base: dict, req_bytes: int, resp_start: int, status, extra: dict) -> None:
        w = self.writer
        resp_bytes = w.total - resp_start
        entry = {
            "ts_start": entry_base.get("ts_start"),
            "ts_first_byte": entry_base.get("ts_first_byte"),
            "ts_end": entry_base.get("ts_end"),
            "conn_id": self.conn_id,
            "seq": self.seq,
            "peer_ip": self.peer_ip,
            "peer_port": self.peer_port,
            "local_ip": self.local_ip,
            "local_port": self.local_port,
            "method": None,
            "path": None,
            "http_version": None,
            "status": status,
            "request_bytes": req_bytes,
            "response_bytes": resp_bytes,
            "stream": False,
            "output_tokens": 0,
            "prompt_tokens": 0,
            "key_id": None,
            "model": None,
            "finish_reason": None,
            "request_id": None,
            "user_agent": None,
            "x_forwarded_for": None,
            "error": None,
        }
        entry.update(extra)
        self.state.log.write(entry)
        self.seq += 1

    # -- main loop -----------------------------------------------------------

    def handle(self) -> None:
        st = self.state
        while True:
            self.idle = self.reader.available() == 0
            if self.idle and st.stopping.is_set():
                self.idle = False
                break
            try:
                ts_start = self.reader.wait_first_byte()
            except OSError:  # includes idle timeout: nothing consumed
                ts_start = None
            finally:
                self.idle = False
            if ts_start is None:
                break  # EOF / timeout between requests
            if not self._one_request(ts_start):
                break
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._linger()
        self._log_leftover()

    def _linger(self) -> None:
        """Lingering close: after our FIN, read (and account for) what the
        peer still sends until its EOF, bounded in time and size, so the
        kernel does not answer unread data with a RST that could destroy the
        response we just sent."""
        if self.reader.eof:
            return
        deadline = time.monotonic() + self.state.args.linger_seconds
        limit = self.reader.received + (1 << 20)
        while self.reader.received < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                self.sock.settimeout(left)
                if not self.reader._fill():
                    break
            except OSError:
                break

    def _log_leftover(self) -> None:
        """Bytes received on this connection that never became part of a
        logged request (e.g. sent after a request we answered with close)."""
        left = self.reader.available()
        if left > 0:
            self.reader.consume_all_buffered()
            self._log(
                {"ts_start": None, "ts_first_byte": None, "ts_end": time.time()},
                left, self.writer.total, None,
                {"error": "unparsed bytes received before connection close"},
            )

    def _parse_head(self, req: Request) -> None:
        r = self.reader
        line = r.readline()
        skipped = 0
        while line in (b"\r\n", b"\n"):
            skipped += 1
            if skipped > 8:
                raise BadRequest(400, "too many empty lines")
            line = r.readline()
        try:
            text = line.decode("latin-1").rstrip("\r\n")
        except Exception:  # pragma: no cover
            raise BadRequest(400, "undecodable request line")
        parts = text.split()
        if len(parts) != 3:
            raise BadRequest(400, "malformed request line")
        method, target, version = parts
        if not version.startswith("HTTP/"):
            raise BadRequest(400, "malformed HTTP version")
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            raise BadRequest(505, "unsupported HTTP version")
        req.method, req.target, req.version = method, target, version
        path = target
        if path.startswith("http://") or path.startswith("https://"):
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        req.path = path.split("?", 1)[0]
        headers: dict[str, str] = {}
        last = None
        for _ in range(MAX_HEADERS + 1):
            line = r.readline()
            if line in (b"\r\n", b"\n"):
                break
            s = line.decode("latin-1").rstrip("\r\n")
            if s[:1] in (" ", "\t"):
                if last is None:
                    raise BadRequest(400, "bad header continuation")
                headers[last] += " " + s.strip()
                continue
            name, sep, value = s.partition(":")
            if not sep or not name or name != name.strip():
                raise BadRequest(400, "malformed header")
            name = name.lower()
            value = value.strip()
            if name in headers:
                if name == "content-length" and headers[name] != value:
                    raise BadRequest(400, "conflicting content-length")
                headers[name] = headers[name] + ", " + value
            else:
                headers[name] = value
            last = name
        else:
            raise BadRequest(431, "too many headers")
        req.headers = headers
        conn_tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        if version == "HTTP/1.1":
            req.keep_alive = "close" not in conn_tokens
        else:
            req.keep_alive = "keep-alive" in conn_tokens
        req.expect_continue = (
            version == "HTTP/1.1" and headers.get("expect", "").lower() == "100-continue"
        )

    def _read_body(self, req: Request) -> None:
        r = self.reader
        h = req.headers
        limit = self.state.args.max_body_bytes
        te = h.get("transfer-encoding")
        if te is not None:
            if te.lower().replace(" ", "") != "chunked":
                raise BadRequest(501, "unsupported transfer-encoding")
            if req.expect_continue:
                self._send_continue()
            body = bytearray()
            while True:
                size_line = r.readline(1024).decode("latin-1").strip()
                size_s = size_line.split(";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise BadRequest(400, "bad chunk size")
                if size < 0:
                    raise BadRequest(400, "bad chunk size")
                if size == 0:
                    # trailers until blank line
                    for _ in range(MAX_HEADERS + 1):
                        t = r.readline()
                        if t in (b"\r\n", b"\n"):
                            break
                    else:
                        raise BadRequest(431, "too many trailers")
                    break
                if len(body) + size > limit:
                    raise BadRequest(413, "request body too large")
                body += r.read_exact(size)
                c = r.read_exact(1)
                if c == b"\r":
                    c = r.read_exact(1)
                if c != b"\n":
                    raise BadRequest(400, "bad chunk terminator")
            req.body = bytes(body)
            return
        cl = h.get("content-length")
        if cl is None:
            req.body = b""
            return
        try:
            n = int(cl)
        except ValueError:
            raise BadRequest(400, "bad content-length")
        if n < 0:
            raise BadRequest(400, "bad content-length")
        if n > limit:
            raise BadRequest(413, "request body too large")
        if n > 0 and req.expect_continue:
            self._send_continue()
        req.body = r.read_exact(n)

    def _send_continue(self) -> None:
        self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _one_request(self, ts_start: float) -> bool:
        """Parse and answer one request. Return True to keep the connection."""
        st = self.state
        req_start = self.reader.consumed
        resp_start = self.writer.total
        self.writer.first_ts = None
        self.cur_status = None
        req = Request()
        req.method = req.path = req.version = None
        req.headers = {}
        req.keep_alive = False
        req.expect_continue = False
        req.ts_start = ts_start
        extra: dict = {}
        try:
            self._parse_head(req)
            extra.update(self._base_extra(req))
            self._read_body(req)
        except (BadRequest, PeerClosed, OSError) as e:
            # The connection is closed after this: everything already
            # received belongs to this (broken) request.
            self.reader.consume_all_buffered()
            status = None
            if isinstance(e, BadRequest):
                status, msg = e.status, e.message
            elif isinstance(e, PeerClosed):
                msg = "peer closed mid-request"
            elif isinstance(e, TimeoutError):
                status, msg = 408, "timeout mid-request"
            else:
                msg = f"read error: {e}"
            extra["error"] = msg
            if status is not None:
                try:
                    self._send_simple(req, status, _error_body(msg, "invalid_request_error"), close=True)
                except OSError as oe:
                    extra["error"] = f"{msg}; write failed: {oe}"
            self._finish_log(req, req_start, resp_start, status, extra)
            return False

        if st.stopping.is_set():
            req.keep_alive = False
        try:
            status = self._dispatch(req, extra)
        except OSError as e:  # client went away / send timeout
            extra["error"] = f"write failed: {e.__class__.__name__}: {e}"
            self._finish_log(req, req_start, resp_start, self.cur_status, extra)
            return False
        except Exception as e:  # a bug: answer 500 if nothing was sent yet
            print(f"inference_server: internal error: {e!r}", file=sys.stderr)
            extra["error"] = f"internal error: {e!r}"
            if self.writer.total == resp_start:
                try:
                    self._send_simple(req, 500, _error_body("internal error", "server_error"), close=True)
                except OSError:
                    pass
            self._finish_log(req, req_start, resp_start, self.cur_status, extra)
            return False
        self._finish_log(req, req_start, resp_start, status, extra)
        return req.keep_alive

    def _base_extra(self, req: Request) -> dict:
        return {
            "method": req.method,
            "path": req.path,
            "http_version": req.version,
            "user_agent": req.header("user-agent"),
            "x_forwarded_for": req.header("x-forwarded-for"),
        }

    def _finish_log(self, req: Request, req_start: int, resp_start: int, status, extra: dict) -> None:
        w = self.writer
        sent_any = w.total > resp_start
        base = {
            "ts_start": req.ts_start,
            "ts_first_byte": w.first_ts if sent_any else None,
            "ts_end": w.last_ts if sent_any else time.time(),
        }
        self._log(base, self.reader.consumed - req_start, resp_start, status, extra)

    # -- response helpers ----------------------------------------------------

    def _head_bytes(self, req: Request, status: int, headers: list[tuple[str, str]], close: bool) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
        lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
        lines.append(f"Server: {SERVER_NAME}")
        for k, v in headers:
            lines.append(f"{k}: {v}")
        if close:
            lines.append("Connection: close")
        elif req.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_simple(self, req: Request, status: int, body: bytes, close: bool = False,
                     extra_headers: list[tuple[str, str]] | None = None,
                     content_type: str = "application/json") -> int:
        if close:
            req.keep_alive = False
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if extra_headers:
            headers.extend(extra_headers)
        head = self._head_bytes(req, status, headers, close=not req.keep_alive)
        self.cur_status = status
        self.writer.write(head if req.method == "HEAD" else head + body)
        return status

    def _dispatch(self, req: Request, extra: dict) -> int:
        """Answer a fully read request; fill `extra` (log fields); return status."""
        st = self.state
        path = req.path.rstrip("/") or "/"
        m = req.method
        get_like = m in ("GET", "HEAD")
        if path == "/health":
            if not get_like:
                return self._method_not_allowed(req, "GET, HEAD")
            return self._send_simple(req, 200, _json_bytes({"status": "ok"}))
        routes_post = ("/v1/chat/completions", "/v1/completions")
        is_models = path == "/v1/models" or path.startswith("/v1/models/")
        if path not in routes_post and not is_models:
            return self._send_simple(req, 404, _error_body(f"Unknown path {req.path}",
                                                           "invalid_request_error", "not_found"))
        if path in routes_post and m != "POST":
            return self._method_not_allowed(req, "POST")
        if is_models and not get_like:
            return self._method_not_allowed(req, "GET, HEAD")

        # -- auth
        key_id = None
        if st.keys:
            key = None
            auth = req.header("authorization")
            if auth:
                scheme, _, cred = auth.partition(" ")
                if scheme.lower() == "bearer":
                    key = cred.strip()
            if not key:
                key = req.header("x-api-key") or req.header("api-key")
            key_id = st.key_index.get(key) if key else None
            if key_id is None:
                msg = "Missing API key" if not key else "Incorrect API key provided"
                extra["error"] = msg
                return self._send_simple(
                    req, 401, _error_body(msg, "invalid_request_error", "invalid_api_key"),
                    extra_headers=[("WWW-Authenticate", 'Bearer realm="siphon-lab"')])
        extra["key_id"] = key_id

        # -- rate limit (per key; per peer IP when no keys are configured)
        bucket_key = ("key", key_id) if key_id is not None else ("ip", self.peer_ip)
        allowed, wait_s, remaining = st.rate_check(bucket_key)
        rl_headers: list[tuple[str, str]] = []
        if st.args.rate_limit_rpm > 0:
            rl_headers = [
                ("x-ratelimit-limit-requests", f"{st.args.rate_limit_rpm:g}"),
                ("x-ratelimit-remaining-requests", str(max(0, remaining))),
            ]
        if not allowed:
            retry = max(1, math.ceil(wait_s))
            extra["error"] = "rate limited"
            return self._send_simple(
                req, 429,
                _error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
                extra_headers=[("Retry-After", str(retry)),
                               ("x-ratelimit-reset-requests", f"{wait_s:.3f}s")] + rl_headers,
            )

        if is_models:
            return self._models(req, path, extra, rl_headers)
        return self._completion(req, path, extra, rl_headers)

    def _method_not_allowed(self, req: Request, allow: str) -> int:
        return self._send_simple(req, 405, _error_body(f"Method {req.method} not allowed",
                                                       "invalid_request_error"),
                                 extra_headers=[("Allow", allow)])

    def _model_obj(self, mid: str) -> dict:
        return {"id": mid, "object": "model", "created": self.state.created, "owned_by": "siphon-lab"}

    def _models(self, req: Request, path: str, extra: dict, rl_headers) -> int:
        st = self.state
        if path == "/v1/models":
            body = _json_bytes({"object": "list", "data": [self._model_obj(m) for m in st.models]})
            return self._send_simple(req, 200, body, extra_headers=rl_headers)
        mid = path[len("/v1/models/"):]
        extra["model"] = mid
        if mid in st.models:
            return self._send_simple(req, 200, _json_bytes(self._model_obj(mid)), extra_headers=rl_headers)
        return self._send_simple(req, 404, _error_body(f"The model '{mid}' does not exist",
                                                       "invalid_request_error", "model_not_found", "model"),
                                 extra_headers=rl_headers)

    def _bad(self, req: Request, extra: dict, msg: str, param=None) -> int:
        extra["error"] = msg
        return self._send_simple(req, 400, _error_body(msg, "invalid_request_error", None, param))

    def _completion(self, req: Request, path: str, extra: dict, rl_headers) -> int:
        st = self.state
        a = st.args
        chat = path == "/v1/chat/completions"
        try:
            payload = json.loads(req.body.decode("utf-8")) if req.body else None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return self._bad(req, extra, f"Invalid JSON body: {e}")
        if not isinstance(payload, dict):
            return self._bad(req, extra, "Request body must be a JSON object")
        model = payload.get("model") or st.models[0]
        if not isinstance(model, str):
            return self._bad(req, extra, "model must be a string", "model")
        extra["model"] = model
        if chat:
            msgs = payload.get("messages")
            if not isinstance(msgs, list) or not msgs:
                return self._bad(req, extra, "'messages' must be a non-empty array", "messages")
            prompt_tokens = _count_words(msgs)
        else:
            if "prompt" not in payload:
                return self._bad(req, extra, "'prompt' is required", "prompt")
            prompt_tokens = _count_words(payload.get("prompt"))
        extra["prompt_tokens"] = prompt_tokens
        mt = payload.get("max_completion_tokens") if chat else None
        if mt is None:
            mt = payload.get("max_tokens")
        if mt is not None:
            if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
                return self._bad(req, extra, "max_tokens must be a positive integer", "max_tokens")
            mt = min(mt, a.max_output_tokens)
        stream = bool(payload.get("stream", False))
        so = payload.get("stream_options")
        include_usage = bool(stream and isinstance(so, dict) and so.get("include_usage"))
        toks, finish = st.draw_tokens(mt)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(toks),
                 "total_tokens": prompt_tokens + len(toks)}
        extra.update(stream=stream, output_tokens=len(toks), finish_reason=finish, request_id=rid)
        delay = a.first_token_delay_ms / 1000.0
        tps = a.tokens_per_second

        if not stream:
            text = "".join(toks)
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                          "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            obj = {"id": rid, "object": "chat.completion" if chat else "text_completion",
                   "created": created, "model": model, "system_fingerprint": "fp_siphon_lab",
                   "choices": [choice], "usage": usage}
            body = _json_bytes(obj)
            # simulated generation time: first-token delay + pacing of the rest
            gen = delay + ((len(toks) - 1) / tps if tps > 0 else 0.0)
            if gen > 0:
                time.sleep(gen)
            return self._send_simple(req, 200, body, extra_headers=[("x-request-id", rid)] + rl_headers)

        # -- streaming (Server-Sent Events)
        chunked = req.version == "HTTP/1.1"
        if not chunked:
            req.keep_alive = False  # HTTP/1.0: the body ends when the connection closes
        headers = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
                   ("x-request-id", rid)] + rl_headers
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        head = self._head_bytes(req, 200, headers, close=not req.keep_alive)

        def frame(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data

        def event(o) -> bytes:
            return frame(b"data: " + _json_bytes(o) + b"\n\n")

        def chunk_obj(choices: list, usage_val=None) -> dict:
            o = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                 "created": created, "model": model, "system_fingerprint": "fp_siphon_lab",
                 "choices": choices}
            if include_usage:
                o["usage"] = usage_val
            return o

        if delay > 0:
            time.sleep(delay)
        self.cur_status = 200
        t0 = time.monotonic()
        pending = head  # the head goes out together with the first token
        for i, tok in enumerate(toks):
            if tps > 0 and i > 0:
                due = t0 + i / tps
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
            if chat:
                delta = {"role": "assistant", "content": tok, "refusal": None} if i == 0 else {"content": tok}
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
            else:
                choice = {"index": 0, "text": tok, "logprobs": None, "finish_reason": None}
            self.writer.write(pending + event(chunk_obj([choice])))
            pending = b""
        if chat:
            last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}
        else:
            last = {"index": 0, "text": "", "logprobs": None, "finish_reason": finish}
        tail = event(chunk_obj([last]))
        if include_usage:
            tail += event(chunk_obj([], usage))
        tail += frame(b"data: [DONE]\n\n")
        if chunked:
            tail += b"0\r\n\r\n"
        self.writer.write(pending + tail)
        return 200


# --------------------------------------------------------------------------
# Server setup
# --------------------------------------------------------------------------


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 512
    block_on_close = False

    def __init__(self, addr, family, state: State):
        self.address_family = family
        self.state = state
        super().__init__(addr, Handler, bind_and_activate=False)
        try:
            if family == socket.AF_INET6:
                host = addr[0]
                v6only = 0 if host in ("::", "") else 1
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def handle_error(self, request, client_address):  # stderr only
        print(f"inference_server: error on connection from {client_address}:", file=sys.stderr)
        import traceback
        traceback.print_exc(file=sys.stderr)


def _resolve(host: str, port: int) -> tuple[int, tuple]:
    if host in ("", "0.0.0.0"):
        return socket.AF_INET, ("0.0.0.0", port)
    if host == "::":
        return socket.AF_INET6, ("::", port, 0, 0)
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    infos = socket.getaddrinfo(h, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    fam, _, _, _, sa = infos[0]
    return fam, sa


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


def main(argv=None) -> int:
    args = parse_args(argv)
    state = State(args)
    servers: list[Server] = []
    port = args.port
    try:
        for host in args.listen:
            fam, sa = _resolve(host, port)
            srv = Server(sa, fam, state)
            servers.append(srv)
            if port == 0:
                port = srv.server_address[1]
    except OSError as e:
        print(f"inference_server: cannot listen: {e}", file=sys.stderr)
        for s in servers:
            s.server_close()
        state.log.close()
        return 2

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    threads = []
    for s in servers:
        t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        t.start()
        threads.append(t)

    if args.ready_file:
        info = {
            "pid": os.getpid(),
            "port": port,
            "listen": [{"host": s.server_address[0], "port": s.server_address[1]} for s in servers],
        }
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(info, fh)
        os.replace(tmp, args.ready_file)

    while not stop.wait(0.5):
        pass

    # -- graceful shutdown
    state.stopping.set()
    for s in servers:
        s.shutdown()
        s.server_close()
    deadline = time.monotonic() + max(0.0, args.shutdown_grace)
    while time.monotonic() < deadline:
        with state.conn_lock:
            handlers = list(state.conns.values())
        if not handlers:
            break
        for h in handlers:
            if h.idle:  # blocked waiting for a next request: wake it up
                try:
                    h.sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
        time.sleep(0.05)
    state.log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
