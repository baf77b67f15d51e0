"""Test helpers for inference_server.py: every server is started on a loopback
address with --port 0 in a subprocess that only its test owns; it is stopped
with SIGTERM (SIGKILL only if that hangs) by its own Popen handle.  All socket
operations have timeouts and all loops are bounded in count and time.
"""

from __future__ import annotations

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

LAB_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(LAB_DIR, "inference_server.py")
KEYS = ["sk-lab-alpha-0001", "sk-lab-beta-0002", "sk-lab-gamma-0003"]
SOCK_TIMEOUT = 10.0


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


class SharedServerCase(ExactMixin, unittest.TestCase):
    """Tests sharing one keyed server (two models, fast tokens, outputs capped at 64); each
    test's raw connections are closed after it. The server must exit 0 and print nothing
    on stdout."""

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
