#!/usr/bin/env python3
"""Self-test of inference_server.py: HTTP/1.x framing (keep-alive, pipelining, fragments,
chunked bodies, 100-continue, HTTP/1.0, closes) and the log's exact byte counts per request.

Run from this folder:  python3 -m unittest -v test_server_framing
(helpers: testkit/server_client.py)
"""

from __future__ import annotations

import json
import socket
import threading
import time
import unittest

from testkit.server_client import KEYS, RawConn, Resp, SharedServerCase, chat, req_bytes, sse_events


class TestFraming(SharedServerCase):
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


if __name__ == "__main__":
    unittest.main()
