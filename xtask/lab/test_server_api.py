#!/usr/bin/env python3
"""Self-test of inference_server.py: the OpenAI API (streaming, output lengths, keys, errors,
the per-key rate limit) and the openai client against it.

Run from this folder:  python3 -m unittest -v test_server_api
(helpers: testkit/server_client.py)
"""

from __future__ import annotations

import importlib.util
import json
import unittest

from testkit.server_client import (KEYS, CountingProxy, ExactMixin, RawConn, ServerProc, SharedServerCase, chat,
                                   req_bytes, sse_events)


class TestOpenAIAPI(SharedServerCase):
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
