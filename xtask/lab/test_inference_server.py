#!/usr/bin/env python3
"""Self-test of inference_server.py (stdlib unittest).

Run from this folder:  python3 -m unittest -v test_inference_server

Every server is started on a loopback address with --port 0 in a subprocess
that only this test owns; it is stopped with SIGTERM (SIGKILL only if that
hangs) by its own Popen handle.  All socket operations have timeouts and all
loops are bounded in count and time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "inference_server.py")
KEYS = ["sk-lab-alpha-0001", "sk-lab-beta-0002", "sk-lab-gamma-0003"]
SOCK_TIMEOUT = 10.0


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


class ServerProc:
    """One inference_server.py subprocess owned by the test."""

    def __init__(self, *extra: str, listen: str = "127.0.0.1"):
        self.tmp = tempfile.mkdtemp(prefix="siphon-lab-test-")
        self.log_path = os.path.join(self.tmp, "requests.jsonl")
        self.ready_path = os.path.join(self.tmp, "ready.json")
        self.out_path = os.path.join(self.tmp, "stdout.txt")
        self.err_path = os.path.join(self.tmp, "stderr.txt")
        cmd = [sys.executable, SERVER, "--listen", listen, "--port", "0",
               "--ready-file", self.ready_path, "--log", self.log_path, *extra]
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if os.path.exists(self.ready_path):
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        if not os.path.exists(self.ready_path):
            self.stop()
            raise RuntimeError(f"server did not become ready: {self.stderr()}")
        with open(self.ready_path) as fh:
            self.info = json.load(fh)
        self.port = self.info["port"]
        self.returncode: int | None = None

    def stderr(self) -> str:
        try:
            with open(self.err_path, errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def stdout(self) -> str:
        with open(self.out_path, errors="replace") as fh:
            return fh.read()

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # only our own child
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        self._out.close()
        self._err.close()
        return self.returncode

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def entries(self) -> list[dict]:
        out = []
        try:
            with open(self.log_path) as fh:
                for line in fh:
                    if line.endswith("\n"):
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out

    def conn_entries(self, client_port: int, n: int, timeout: float = 5.0) -> list[dict]:
        """Wait (bounded) until n log entries exist for the connection whose
        client-side port is client_port; return them in seq order."""
        deadline = time.monotonic() + timeout
        while True:
            es = [e for e in self.entries() if e["peer_port"] == client_port]
            if len(es) >= n or time.monotonic() > deadline:
                return sorted(es, key=lambda e: e["seq"])
            time.sleep(0.02)


class Resp:
    def __init__(self):
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.raw_len = 0
        self.interim: list[int] = []

    def json(self):
        return json.loads(self.body)


class RawConn:
    """A raw TCP client that splits the received byte stream per response
    and counts every byte it sent and received."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=SOCK_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_port = self.sock.getsockname()[1]
        self.buf = bytearray()
        self.eof = False
        self.sent = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _more(self, deadline: float) -> None:
        if self.eof:
            raise EOFError("connection closed by server")
        if time.monotonic() > deadline:
            raise TimeoutError("response took too long")
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            raise EOFError("connection closed by server")
        self.buf += data

    def _line(self, pos: int, deadline: float) -> int:
        """Return the index just past the next CRLF at or after pos."""
        for _ in range(100000):
            i = self.buf.find(b"\r\n", pos)
            if i >= 0:
                return i + 2
            self._more(deadline)
        raise RuntimeError("unbounded")

    def _need(self, n: int, deadline: float) -> None:
        for _ in range(100000):
            if len(self.buf) >= n:
                return
            self._more(deadline)
        raise RuntimeError("unbounded")

    def read_response(self, method: str = "GET", timeout: float = 20.0) -> Resp:
        deadline = time.monotonic() + timeout
        r = Resp()
        pos = 0
        for _ in range(10):  # interim (1xx) responses, then the final one
            for _ in range(100000):
                i = self.buf.find(b"\r\n\r\n", pos)
                if i >= 0:
                    break
                self._more(deadline)
            head = bytes(self.buf[pos:i]).decode("latin-1").split("\r\n")
            pos = i + 4
            status = int(head[0].split()[1])
            if 100 <= status < 200:
                r.interim.append(status)
                continue
            r.status = status
            for h in head[1:]:
                k, _, v = h.partition(":")
                r.headers[k.strip().lower()] = v.strip()
            break
        body = bytearray()
        if method == "HEAD" or r.status in (204, 304):
            pass
        elif r.headers.get("transfer-encoding", "").lower() == "chunked":
            for _ in range(1000000):
                end = self._line(pos, deadline)
                size = int(bytes(self.buf[pos:end - 2]).split(b";")[0], 16)
                pos = end
                if size == 0:
                    for _ in range(1000):  # trailers until empty line
                        end = self._line(pos, deadline)
                        blank = end - pos == 2
                        pos = end
                        if blank:
                            break
                    break
                self._need(pos + size + 2, deadline)
                body += self.buf[pos:pos + size]
                assert self.buf[pos + size:pos + size + 2] == b"\r\n", "bad chunk framing"
                pos += size + 2
        elif "content-length" in r.headers:
            n = int(r.headers["content-length"])
            self._need(pos + n, deadline)
            body += self.buf[pos:pos + n]
            pos += n
        else:  # delimited by connection close
            for _ in range(1000000):
                try:
                    self._more(deadline)
                except EOFError:
                    break
            body += self.buf[pos:]
            pos = len(self.buf)
        r.body = bytes(body)
        r.raw_len = pos
        del self.buf[:pos]
        return r

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection (EOF) with no extra bytes."""
        deadline = time.monotonic() + timeout
        for _ in range(1000):
            try:
                self._more(deadline)
            except EOFError:
                return not self.buf
            except (TimeoutError, socket.timeout):
                return False
        return False


def req_bytes(method: str, path: str, body=None, key: str | None = KEYS[0], version: str = "HTTP/1.1",
              headers: list[tuple[str, str]] | None = None, host: str = "lab") -> bytes:
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
    lines = [f"{method} {path} {version}", f"Host: {host}", "User-Agent: siphon-lab-test/1"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    for k, v in headers or []:
        lines.append(f"{k}: {v}")
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def chat(max_tokens=None, stream=False, **kw) -> dict:
    d = {"model": "lab-model", "messages": [{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": "count the packets please"}]}
    if max_tokens is not None:
        d["max_tokens"] = max_tokens
    if stream:
        d["stream"] = True
    d.update(kw)
    return d


def sse_events(body: bytes) -> list[str]:
    text = body.decode()
    assert text.endswith("\n\n"), "SSE stream must end with a blank line"
    out = []
    for ev in text.split("\n\n")[:-1]:
        assert ev.startswith("data: "), ev
        out.append(ev[len("data: "):])
    return out


class ExactMixin:
    srv: ServerProc

    def assertExact(self, conn: RawConn, sent: list[bytes], resps: list[Resp]) -> list[dict]:
        """Log entries of this connection match, request by request, the
        bytes this socket sent and received."""
        es = self.srv.conn_entries(conn.local_port, len(sent))
        self.assertEqual(len(es), len(sent), f"log entries: {es}")
        for i, (e, s, r) in enumerate(zip(es, sent, resps)):
            self.assertEqual(e["seq"], i)
            self.assertEqual(e["conn_id"], es[0]["conn_id"])
            self.assertEqual(e["request_bytes"], len(s), f"request {i} bytes: {e}")
            self.assertEqual(e["response_bytes"], r.raw_len, f"response {i} bytes: {e}")
            self.assertEqual(e["status"], r.status)
            self.assertEqual(e["peer_ip"], "127.0.0.1")
            self.assertEqual(e["local_port"], self.srv.port)
            self.assertLessEqual(e["ts_start"], e["ts_first_byte"])
            self.assertLessEqual(e["ts_first_byte"], e["ts_end"])
        return es


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


class TestRawHTTP(ExactMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = ServerProc("--keys", ",".join(KEYS), "--tokens-per-second", "2000",
                             "--first-token-delay-ms", "25", "--seed", "7",
                             "--max-output-tokens", "64", "--output-len-median", "16",
                             "--model", "lab-model,lab-model-b")

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        out = cls.srv.stdout()
        err = cls.srv.stderr()
        cls.srv.cleanup()
        assert rc == 0, f"server exit code {rc}; stderr: {err}"
        assert out == "", f"server wrote to stdout: {out!r}"

    def setUp(self):
        self.conns: list[RawConn] = []

    def tearDown(self):
        for c in self.conns:
            c.close()

    def conn(self) -> RawConn:
        c = RawConn(self.srv.port)
        self.conns.append(c)
        return c

    def test_keepalive_three_requests(self):
        c = self.conn()
        sent, resps = [], []
        for method, path, body in (("GET", "/health", None),
                                   ("POST", "/v1/chat/completions", chat(max_tokens=5)),
                                   ("GET", "/v1/models", None)):
            b = req_bytes(method, path, body)
            c.send(b)
            sent.append(b)
            resps.append(c.read_response(method))
        self.assertEqual([r.status for r in resps], [200, 200, 200])
        self.assertEqual(resps[0].json(), {"status": "ok"})
        cc = resps[1].json()
        self.assertEqual(cc["object"], "chat.completion")
        self.assertEqual(cc["model"], "lab-model")
        self.assertEqual(cc["usage"]["completion_tokens"], 5)
        self.assertEqual(cc["choices"][0]["finish_reason"], "length")
        self.assertEqual(len(cc["choices"][0]["message"]["content"].split()), 5)
        self.assertEqual([m["id"] for m in resps[2].json()["data"]], ["lab-model", "lab-model-b"])
        es = self.assertExact(c, sent, resps)
        self.assertEqual([e["path"] for e in es], ["/health", "/v1/chat/completions", "/v1/models"])
        self.assertEqual(es[1]["output_tokens"], 5)
        self.assertEqual(es[1]["prompt_tokens"], 6)
        self.assertEqual(es[1]["key_id"], 0)
        self.assertFalse(es[1]["stream"])
        self.assertEqual(es[1]["user_agent"], "siphon-lab-test/1")
        self.assertIsNone(es[0]["key_id"])  # /health needs no key
        # time to first byte includes the configured first-token delay
        self.assertGreaterEqual(es[1]["ts_first_byte"] - es[1]["ts_start"], 0.024)

    def test_pipelined_pair(self):
        c = self.conn()
        a = req_bytes("POST", "/v1/chat/completions", chat(max_tokens=3),
                      headers=[("X-Forwarded-For", "203.0.113.9")])
        b = req_bytes("GET", "/v1/models/lab-model-b")
        c.send(a + b)  # both before reading anything
        r1 = c.read_response("POST")
        r2 = c.read_response("GET")
        self.assertEqual(r1.json()["object"], "chat.completion")
        self.assertEqual(r2.json()["id"], "lab-model-b")
        es = self.assertExact(c, [a, b], [r1, r2])
        self.assertEqual(es[0]["x_forwarded_for"], "203.0.113.9")
        self.assertEqual(es[1]["model"], "lab-model-b")
        # the second request arrived with the first one
        self.assertLessEqual(es[1]["ts_start"], es[0]["ts_end"])

    def test_pipelined_stream_then_requests_fragmented(self):
        c = self.conn()
        a = req_bytes("POST", "/v1/chat/completions", chat(max_tokens=8, stream=True))
        b = req_bytes("POST", "/v1/completions", {"model": "lab-model", "prompt": "one two three",
                                                  "max_tokens": 4})
        d = req_bytes("GET", "/health", key=None)
        blob = a + b + d
        # cut the pipelined stream at awkward places (inside headers, body)
        cuts = [7, len(a) - 3, len(a) + 20, len(a) + len(b) + 5]
        prev = 0
        for cut in cuts + [len(blob)]:
            c.send(blob[prev:cut])
            prev = cut
            time.sleep(0.01)
        rs = [c.read_response("POST"), c.read_response("POST"), c.read_response("GET")]
        self.assertEqual([r.status for r in rs], [200, 200, 200])
        self.assertEqual(rs[1].json()["object"], "text_completion")
        self.assertEqual(rs[1].json()["usage"], {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        self.assertExact(c, [a, b, d], rs)

    def test_many_pipelined_large_bodies(self):
        # ~300 KiB of pipelined requests in one go: the server's read buffer
        # is compacted several times while requests are being counted
        c = self.conn()
        sent = []
        for i in range(120):
            filler = "pad " * (300 + 37 * (i % 11))
            body = chat(max_tokens=1 + i % 3, user=filler)
            sent.append(req_bytes("POST", "/v1/chat/completions", body))
        blob = b"".join(sent)
        errors = []

        def sender():
            try:
                c.sock.sendall(blob)
            except OSError as e:  # pragma: no cover
                errors.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        rs = [c.read_response("POST") for _ in sent]
        t.join(10)
        self.assertFalse(errors)
        self.assertEqual({r.status for r in rs}, {200})
        self.assertEqual([r.json()["usage"]["completion_tokens"] for r in rs],
                         [1 + i % 3 for i in range(120)])
        self.assertExact(c, sent, rs)

    def test_concurrent_connections(self):
        n_conns, n_req = 16, 4
        results: dict[int, tuple[list[bytes], list[Resp]]] = {}
        errors = []
        conns = [self.conn() for _ in range(n_conns)]

        def worker(c: RawConn):
            try:
                sent, rs = [], []
                for j in range(n_req):
                    b = req_bytes("POST", "/v1/chat/completions", chat(max_tokens=3, stream=j % 2 == 0))
                    c.send(b)
                    sent.append(b)
                    rs.append(c.read_response("POST"))
                results[c.local_port] = (sent, rs)
            except Exception as e:  # pragma: no cover
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertFalse(errors)
        self.assertEqual(len(results), n_conns)
        conn_ids = set()
        for c in conns:
            sent, rs = results[c.local_port]
            es = self.assertExact(c, sent, rs)
            conn_ids.add(es[0]["conn_id"])
        self.assertEqual(len(conn_ids), n_conns)

    def test_streaming_chat(self):
        c = self.conn()
        a = req_bytes("POST", "/v1/chat/completions", chat(max_tokens=6, stream=True))
        c.send(a)
        r = c.read_response("POST")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["transfer-encoding"], "chunked")
        self.assertTrue(r.headers["content-type"].startswith("text/event-stream"))
        evs = sse_events(r.body)
        self.assertEqual(evs[-1], "[DONE]")
        chunks = [json.loads(e) for e in evs[:-1]]
        self.assertEqual(len(chunks), 7)  # 6 tokens + finish
        self.assertTrue(all(ch["object"] == "chat.completion.chunk" for ch in chunks))
        self.assertEqual(chunks[0]["choices"][0]["delta"]["role"], "assistant")
        text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks)
        self.assertEqual(len(text.split()), 6)
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")
        self.assertEqual(len({ch["id"] for ch in chunks}), 1)
        # keep-alive still works after a chunked response
        b = req_bytes("GET", "/health")
        c.send(b)
        r2 = c.read_response("GET")
        es = self.assertExact(c, [a, b], [r, r2])
        self.assertTrue(es[0]["stream"])
        self.assertEqual(es[0]["output_tokens"], 6)
        self.assertEqual(es[0]["request_id"], chunks[0]["id"])

    def test_streaming_completions_with_usage(self):
        c = self.conn()
        a = req_bytes("POST", "/v1/completions",
                      {"model": "lab-model", "prompt": ["alpha beta", "gamma"], "max_tokens": 3,
                       "stream": True, "stream_options": {"include_usage": True}})
        c.send(a)
        r = c.read_response("POST")
        evs = sse_events(r.body)
        self.assertEqual(evs[-1], "[DONE]")
        objs = [json.loads(e) for e in evs[:-1]]
        self.assertEqual(len(objs), 5)  # 3 tokens + finish + usage
        self.assertEqual(objs[-1]["choices"], [])
        self.assertEqual(objs[-1]["usage"], {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
        self.assertExact(c, [a], [r])

    def test_lognormal_output_length(self):
        c = self.conn()
        sent, rs = [], []
        for _ in range(5):
            b = req_bytes("POST", "/v1/chat/completions", chat())
            c.send(b)
            sent.append(b)
            rs.append(c.read_response("POST"))
        es = self.assertExact(c, sent, rs)
        for r, e in zip(rs, es):
            u = r.json()["usage"]["completion_tokens"]
            self.assertEqual(u, e["output_tokens"])
            self.assertTrue(1 <= u <= 64, u)
            self.assertEqual(r.json()["choices"][0]["finish_reason"], "stop")

    def test_max_tokens_is_capped(self):
        c = self.conn()
        b = req_bytes("POST", "/v1/chat/completions", chat(max_tokens=100000))
        c.send(b)
        r = c.read_response("POST")
        self.assertEqual(r.json()["usage"]["completion_tokens"], 64)
        self.assertExact(c, [b], [r])

    def test_unauthorized(self):
        c = self.conn()
        cases = [req_bytes("GET", "/v1/models", key=None),
                 req_bytes("POST", "/v1/chat/completions", chat(max_tokens=2), key="sk-wrong"),
                 req_bytes("GET", "/v1/models", key=None, headers=[("x-api-key", KEYS[1])]),
                 req_bytes("GET", "/v1/models", key=None, headers=[("api-key", KEYS[2])])]
        rs = []
        for b in cases:
            c.send(b)
            rs.append(c.read_response("GET"))
        self.assertEqual([r.status for r in rs], [401, 401, 200, 200])
        err = rs[0].json()["error"]
        self.assertEqual(err["code"], "invalid_api_key")
        self.assertIn("message", err)
        es = self.assertExact(c, cases, rs)
        self.assertEqual([e["key_id"] for e in es], [None, None, 1, 2])
        with open(self.srv.log_path) as fh:
            log_text = fh.read()
        for k in KEYS + ["sk-wrong"]:
            self.assertNotIn(k, log_text, "API keys must never be logged")

    def test_errors_keep_connection(self):
        c = self.conn()
        cases = [("GET", req_bytes("GET", "/nope")),
                 ("GET", req_bytes("GET", "/v1/chat/completions")),
                 ("POST", req_bytes("POST", "/v1/chat/completions", b"{not json")),
                 ("POST", req_bytes("POST", "/v1/chat/completions", {"model": "x"})),
                 ("GET", req_bytes("GET", "/v1/models/missing")),
                 ("HEAD", req_bytes("HEAD", "/health")),
                 ("GET", req_bytes("GET", "/health?x=1"))]
        rs = []
        for m, b in cases:
            c.send(b)
            rs.append(c.read_response(m))
        self.assertEqual([r.status for r in rs], [404, 405, 400, 400, 404, 200, 200])
        self.assertEqual(rs[1].headers["allow"], "POST")
        self.assertEqual(rs[5].body, b"")
        self.assertExact(c, [b for _, b in cases], rs)

    def test_expect_continue_and_chunked_request_body(self):
        c = self.conn()
        body = json.dumps(chat(max_tokens=2)).encode()
        parts = [body[:10], body[10:40], body[40:]]
        chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\nX-Trailer: 1\r\n\r\n"
        head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: lab\r\n"
                f"Authorization: Bearer {KEYS[0]}\r\nTransfer-Encoding: chunked\r\n"
                "Expect: 100-continue\r\n\r\n").encode()
        c.send(head)
        # the interim response must come before we send the body
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in c.buf:
            c._more(deadline)
        self.assertTrue(bytes(c.buf).startswith(b"HTTP/1.1 100 Continue\r\n\r\n"))
        c.send(chunked)
        r = c.read_response("POST")
        self.assertEqual(r.interim, [100])
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["usage"]["completion_tokens"], 2)
        # Content-Length body with Expect as well
        b2 = req_bytes("POST", "/v1/completions", {"prompt": "x y", "max_tokens": 1},
                       headers=[("Expect", "100-continue")])
        c.send(b2)
        r2 = c.read_response("POST")
        self.assertEqual(r2.interim, [100])
        self.assertExact(c, [head + chunked, b2], [r, r2])

    def test_http10(self):
        # HTTP/1.0 without keep-alive: one response, then the server closes
        c = self.conn()
        a = req_bytes("POST", "/v1/chat/completions", chat(max_tokens=2), version="HTTP/1.0")
        c.send(a)
        r = c.read_response("POST")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.get("connection"), "close")
        self.assertTrue(c.wait_closed())
        self.assertExact(c, [a], [r])
        # HTTP/1.0 with keep-alive
        c2 = self.conn()
        sent, rs = [], []
        for _ in range(2):
            b = req_bytes("GET", "/v1/models", version="HTTP/1.0", headers=[("Connection", "keep-alive")])
            c2.send(b)
            sent.append(b)
            rs.append(c2.read_response("GET"))
        self.assertEqual(rs[0].headers.get("connection"), "keep-alive")
        self.assertExact(c2, sent, rs)
        # HTTP/1.0 streaming: no chunking, body delimited by close
        c3 = self.conn()
        s = req_bytes("POST", "/v1/chat/completions", chat(max_tokens=4, stream=True), version="HTTP/1.0",
                      headers=[("Connection", "keep-alive")])
        c3.send(s)
        r3 = c3.read_response("POST")
        self.assertNotIn("transfer-encoding", r3.headers)
        self.assertEqual(sse_events(r3.body)[-1], "[DONE]")
        self.assertExact(c3, [s], [r3])

    def test_connection_close_header(self):
        c = self.conn()
        a = req_bytes("GET", "/health", headers=[("Connection", "close")])
        c.send(a)
        r = c.read_response("GET")
        self.assertEqual(r.headers.get("connection"), "close")
        self.assertTrue(c.wait_closed())
        self.assertExact(c, [a], [r])

    def test_malformed_request_closes(self):
        c = self.conn()
        bad = b"THIS IS NOT HTTP AT ALL\r\n\r\n"
        c.send(bad)
        r = c.read_response("GET")
        self.assertEqual(r.status, 400)
        self.assertTrue(c.wait_closed())
        es = self.srv.conn_entries(c.local_port, 1)
        self.assertEqual(len(es), 1)
        self.assertEqual(es[0]["request_bytes"], len(bad))
        self.assertEqual(es[0]["response_bytes"], r.raw_len)
        self.assertEqual(es[0]["status"], 400)

    def test_peer_closes_mid_request(self):
        c = self.conn()
        full = req_bytes("GET", "/health")
        partial = full[:-7]
        c.send(full)  # one complete request ...
        r = c.read_response("GET")
        c.send(partial)  # ... then a truncated one, and close our side
        c.sock.shutdown(socket.SHUT_WR)
        self.assertTrue(c.wait_closed())
        es = self.srv.conn_entries(c.local_port, 2)
        self.assertEqual(len(es), 2)
        self.assertEqual(es[0]["request_bytes"], len(full))
        self.assertEqual(es[0]["response_bytes"], r.raw_len)
        self.assertEqual(es[1]["request_bytes"], len(partial))
        self.assertEqual(es[1]["response_bytes"], 0)
        self.assertIsNone(es[1]["status"])
        self.assertIsNotNone(es[1]["error"])


class TestRateLimit(ExactMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = ServerProc("--keys", ",".join(KEYS), "--rate-limit-rpm", "2",
                             "--tokens-per-second", "0", "--first-token-delay-ms", "0")

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.srv.cleanup()
        assert rc == 0, rc

    def test_429_per_key(self):
        c = RawConn(self.srv.port)
        try:
            sent, rs = [], []
            for key in (KEYS[0], KEYS[0], KEYS[0], KEYS[1]):
                b = req_bytes("POST", "/v1/chat/completions", chat(max_tokens=1), key=key)
                c.send(b)
                sent.append(b)
                rs.append(c.read_response("POST"))
            self.assertEqual([r.status for r in rs], [200, 200, 429, 200])
            retry = int(rs[2].headers["retry-after"])
            self.assertTrue(1 <= retry <= 30, retry)
            self.assertEqual(rs[2].json()["error"]["code"], "rate_limit_exceeded")
            es = self.assertExact(c, sent, rs)
            self.assertEqual([e["key_id"] for e in es], [0, 0, 0, 1])
            # a bad key is refused with 401 before any rate limiting
            b = req_bytes("GET", "/v1/models", key="nope")
            c.send(b)
            self.assertEqual(c.read_response("GET").status, 401)
        finally:
            c.close()


class TestIPv6DualStack(unittest.TestCase):
    def test_dual_stack(self):
        if not socket.has_ipv6:
            self.skipTest("no IPv6 support in this Python")
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.bind(("::1", 0))
        except OSError as e:
            self.skipTest(f"IPv6 loopback unavailable: {e}")
        srv = ServerProc("--tokens-per-second", "0", listen="::")
        try:
            seen = []
            for host in ("127.0.0.1", "::1"):
                c = RawConn(srv.port, host=host)
                try:
                    b = req_bytes("GET", "/health", key=None)
                    c.send(b)
                    r = c.read_response("GET")
                    self.assertEqual(r.status, 200)
                    es = srv.conn_entries(c.local_port, 1)
                    self.assertEqual(len(es), 1)
                    self.assertEqual(es[0]["request_bytes"], len(b))
                    self.assertEqual(es[0]["response_bytes"], r.raw_len)
                    seen.append(es[0]["peer_ip"])
                finally:
                    c.close()
            self.assertEqual(seen, ["127.0.0.1", "::1"])
        finally:
            self.assertEqual(srv.stop(), 0)
            srv.cleanup()


class TestShutdown(unittest.TestCase):
    def test_sigterm_finishes_inflight_and_exits_zero(self):
        srv = ServerProc("--tokens-per-second", "50", "--first-token-delay-ms", "0")
        idle = RawConn(srv.port)
        busy = RawConn(srv.port)
        try:
            b = req_bytes("GET", "/health", key=None)
            idle.send(b)
            idle.read_response("GET")  # now idle in keep-alive
            s = req_bytes("POST", "/v1/chat/completions", chat(max_tokens=20, stream=True), key=None)
            busy.send(s)
            deadline = time.monotonic() + 5
            while not busy.buf:
                busy._more(deadline)  # the stream has started
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            r = busy.read_response("POST")  # the in-flight stream completes
            self.assertEqual(sse_events(r.body)[-1], "[DONE]")
            self.assertEqual(r.headers.get("connection"), None)
            self.assertTrue(idle.wait_closed())
            rc = srv.proc.wait(10)
            self.assertEqual(rc, 0, srv.stderr())
            self.assertLess(time.monotonic() - t0, 8)
            es = srv.entries()
            self.assertEqual(len(es), 2)
            stream_e = [e for e in es if e["stream"]][0]
            self.assertEqual(stream_e["response_bytes"], r.raw_len)
            self.assertEqual(stream_e["request_bytes"], len(s))
            self.assertEqual(srv.stdout(), "")
        finally:
            idle.close()
            busy.close()
            srv.stop()
            srv.cleanup()


class CountingProxy:
    """Loopback TCP proxy counting the bytes of each proxied connection, to
    check the log's totals for a real client (the openai package)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.stats: dict[int, list[int]] = {}  # upstream local port -> [up, down]
        self.threads: list[threading.Thread] = []
        self.stop_ev = threading.Event()
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        for _ in range(100000):
            if self.stop_ev.is_set():
                return
            try:
                cs, _ = self.lsock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            us = socket.create_connection(("127.0.0.1", self.target_port), timeout=SOCK_TIMEOUT)
            cs.settimeout(30)
            us.settimeout(30)
            st = [0, 0]
            self.stats[us.getsockname()[1]] = st
            for src, dst, idx in ((cs, us, 0), (us, cs, 1)):
                t = threading.Thread(target=self._pump, args=(src, dst, st, idx), daemon=True)
                t.start()
                self.threads.append(t)

    @staticmethod
    def _pump(src, dst, st, idx):
        try:
            for _ in range(10000000):
                data = src.recv(65536)
                if not data:
                    break
                st[idx] += len(data)
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self, timeout: float = 10.0):
        self.stop_ev.set()
        deadline = time.monotonic() + timeout
        for t in self.threads + [self.acceptor]:
            t.join(max(0.0, deadline - time.monotonic()))
        self.lsock.close()


HAVE_OPENAI = importlib.util.find_spec("openai") is not None


@unittest.skipUnless(HAVE_OPENAI, "the 'openai' package is not installed; "
                                  "pip install openai to run the client compatibility tests")
class TestOpenAIClient(unittest.TestCase):
    def test_openai_client(self):
        import openai
        srv = ServerProc("--keys", ",".join(KEYS), "--tokens-per-second", "1000",
                         "--first-token-delay-ms", "5", "--model", "lab-model")
        proxy = CountingProxy(srv.port)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{proxy.port}/v1", api_key=KEYS[2],
                                   max_retries=0, timeout=20)
            msgs = [{"role": "user", "content": "hello there"}]
            resp = client.chat.completions.create(model="lab-model", messages=msgs, max_tokens=7)
            self.assertEqual(resp.usage.completion_tokens, 7)
            self.assertEqual(resp.choices[0].finish_reason, "length")
            self.assertEqual(len(resp.choices[0].message.content.split()), 7)
            self.assertEqual(resp.choices[0].message.role, "assistant")

            stream = client.chat.completions.create(model="lab-model", messages=msgs, max_tokens=9,
                                                    stream=True, stream_options={"include_usage": True})
            parts, usage, finish = [], None, None
            for chunk in stream:
                if chunk.choices:
                    if chunk.choices[0].delta.content:
                        parts.append(chunk.choices[0].delta.content)
                    finish = chunk.choices[0].finish_reason or finish
                if chunk.usage:
                    usage = chunk.usage
            self.assertEqual(len("".join(parts).split()), 9)
            self.assertEqual(finish, "length")
            self.assertEqual(usage.completion_tokens, 9)

            comp = client.completions.create(model="lab-model", prompt="a b c", max_tokens=3)
            self.assertEqual(comp.usage.prompt_tokens, 3)
            self.assertEqual(len(comp.choices[0].text.split()), 3)
            scomp = client.completions.create(model="lab-model", prompt="a b c", max_tokens=3, stream=True)
            self.assertEqual(len("".join(c.choices[0].text for c in scomp).split()), 3)

            self.assertEqual([m.id for m in client.models.list()], ["lab-model"])
            self.assertEqual(client.models.retrieve("lab-model").id, "lab-model")
            client.close()
            bad = openai.OpenAI(base_url=f"http://127.0.0.1:{proxy.port}/v1", api_key="bad",
                                max_retries=0, timeout=20)
            with self.assertRaises(openai.AuthenticationError):
                bad.models.list()
            bad.close()
        finally:
            proxy.close()
            rc = srv.stop()
            entries = srv.entries()
            srv.cleanup()
        self.assertEqual(rc, 0)
        self.assertEqual(len(entries), 7, entries)
        by_conn: dict[int, list[dict]] = {}
        for e in entries:
            by_conn.setdefault(e["peer_port"], []).append(e)
        self.assertEqual(set(by_conn), set(proxy.stats))
        reused = False
        for port, es in by_conn.items():
            up, down = proxy.stats[port]
            self.assertEqual(sum(e["request_bytes"] for e in es), up, es)
            self.assertEqual(sum(e["response_bytes"] for e in es), down, es)
            reused = reused or len(es) > 1
        self.assertTrue(reused, "the openai client should reuse keep-alive connections")
        ok = [e for e in entries if e["status"] == 200]
        self.assertEqual(len(ok), 6)
        self.assertTrue(all(e["key_id"] == 2 for e in ok))
        self.assertTrue(all(e["user_agent"] and "OpenAI" in e["user_agent"] for e in ok))


if __name__ == "__main__":
    unittest.main()
