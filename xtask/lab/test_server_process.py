#!/usr/bin/env python3
"""Self-test of inference_server.py as a process: dual-stack listening and the graceful
shutdown on SIGTERM.

Run from this folder:  python3 -m unittest -v test_server_process
(helpers: testkit/server_client.py)
"""

from __future__ import annotations

import signal
import socket
import time
import unittest

from testkit.server_client import RawConn, ServerProc, chat, req_bytes, sse_events


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


if __name__ == "__main__":
    unittest.main()
