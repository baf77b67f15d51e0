#!/usr/bin/env python3
"""Self-test of actors.py: each actor kind against a loopback inference server, its log
checked (keys, addresses, pacing, sessions, sizes).

Run from this folder:  python3 -m unittest -v test_actor_kinds
(helpers: testkit/actor_harness.py)
"""

from __future__ import annotations

import collections
import unittest

from testkit.actor_harness import KEYS, ActorCase, ServerProc, run_actor, trace_args


class ActorKindTests(ActorCase):
    def test_h1_curl_one_key_back_to_back(self):
        rc, lines, err = run_actor(self.tmp, "harvester", "t-h1", self.srv.url, "--level", "h1",
                                   "--duration", "20", "--max-requests", "8")
        self.assertEqual(rc, 0, err)
        ok = self.check_lines(lines, "harvester", "t-h1", "curl", min_ok=8)
        self.assertEqual({ln["key_index"] for ln in lines}, {0})
        self.assertEqual({ln["source_ip"] for ln in lines}, {None})
        self.assertTrue(all(1024 <= ln["max_tokens"] <= 2048 for ln in lines))
        self.assertTrue(all(ln["level"] == "h1" for ln in lines))
        # --concurrency default 4: requests overlap
        self.assertGreaterEqual(len({ln["worker"] for ln in lines}), 2)
        # long outputs: the body is much bigger than the prompt
        self.assertTrue(all(ln["response_bytes"] > 5 * ln["prompt_chars"] for ln in ok))
        self.assertEqual(len(lines), 8)
        self.assertIn('"stop_reason": "max-requests"', err)

    def test_h2_jittered_openai(self):
        rc, lines, err = run_actor(self.tmp, "harvester", "t-h2", self.srv.url, "--level", "h2",
                                   "--duration", "20", "--max-requests", "8", "--time-scale", "20",
                                   "--concurrency", "1")
        self.assertEqual(rc, 0, err)
        self.check_lines(lines, "harvester", "t-h2", "openai-python", min_ok=8)
        self.assertTrue({ln["key_index"] for ln in lines} <= {0, 1})
        lines.sort(key=lambda ln: ln["ts_start"])
        gaps = [b["ts_start"] - a["ts_end"] for a, b in zip(lines, lines[1:])]
        self.assertTrue(all(g > 0.0 for g in gaps), gaps)  # never back to back
        self.assertGreater(max(gaps) - min(gaps), 0.005, gaps)  # jittered

    def test_h3_hydra_keys_and_source_ips_under_rate_limit(self):
        # a server with a strict per-key limit: 120/min, burst 1 (one request per 0.5 s per key)
        srv = ServerProc(self.tmp, "rl", "--tokens-per-second", "4000", "--first-token-delay-ms", "5",
                         "--rate-limit-rpm", "120", "--rate-limit-burst", "1")
        try:
            ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
            keys = KEYS[:4]
            rc, lines, err = run_actor(self.tmp, "harvester", "t-h3", srv.url, "--level", "h3",
                                       "--duration", "25", "--max-requests", "16", "--rate-per-key", "100",
                                       "--source-ips", ",".join(ips), keys=keys)
            entries = srv.entries()
        finally:
            srv.stop()
        self.assertEqual(rc, 0, err)
        self.check_lines(lines, "harvester", "t-h3", "openai-python", min_ok=16)
        self.assertEqual({ln["key_index"] for ln in lines}, set(range(4)))
        self.assertEqual({ln["source_ip"] for ln in lines}, set(ips))
        # the key <-> address assignment of a head is fixed
        pairs = {(ln["key_index"], ln["source_ip"]) for ln in lines}
        self.assertEqual(len(pairs), 4, pairs)
        # the server saw those addresses, and never had to rate limit
        self.assertEqual({e["peer_ip"] for e in entries if e.get("method") == "POST"}, set(ips))
        self.assertEqual([e for e in entries if e.get("status") == 429], [])
        # round robin: the first four requests are one per key
        first = sorted(lines, key=lambda ln: ln["ts_start"])[:4]
        self.assertEqual(sorted(ln["key_index"] for ln in first), [0, 1, 2, 3])
        # per key, requests start at least 60/100 s apart (minus scheduling slack)
        by_key = collections.defaultdict(list)
        for ln in lines:
            by_key[ln["key_index"]].append(ln["ts_start"])
        for k, ts in by_key.items():
            ts.sort()
            self.assertTrue(all(b - a >= 0.55 for a, b in zip(ts, ts[1:])), (k, ts))

    def test_h3_curl_interface_binding(self):
        ips = ["127.0.0.5", "127.0.0.6"]
        rc, lines, err = run_actor(self.tmp, "harvester", "t-h3c", self.srv.url, "--level", "h3", "--client", "curl",
                                   "--duration", "20", "--max-requests", "6", "--rate-per-key", "240",
                                   "--source-ips", ",".join(ips), keys=KEYS[:3])
        self.assertEqual(rc, 0, err)
        self.check_lines(lines, "harvester", "t-h3c", "curl", min_ok=6)
        self.assertEqual({ln["source_ip"] for ln in lines}, set(ips))
        peers = {(e["peer_ip"], e["key_id"]) for e in self.srv.entries() if e.get("peer_ip") in ips}
        self.assertEqual(peers, {("127.0.0.5", 0), ("127.0.0.6", 1), ("127.0.0.5", 2)})

    def test_human_sessions(self):
        rc, lines, err = run_actor(self.tmp, "human", "t-hu", self.srv.url, "--duration", "25",
                                   "--max-requests", "14", "--time-scale", "100", "--trace-fraction", "0.01",
                                   *trace_args(self.tmp, "conv"), keys=KEYS[:3])
        self.assertEqual(rc, 0, err)
        ok = self.check_lines(lines, "human", "t-hu", "openai-python", min_ok=10)
        sessions = collections.defaultdict(list)
        for ln in lines:
            sessions[ln["session"]].append(ln)
        self.assertGreaterEqual(len(sessions), 2)
        # a session is one user: one key
        for s in sessions.values():
            self.assertEqual(len({ln["key_index"] for ln in s}), 1)
        later = [ln for ln in lines if ln["turn"] > 0]
        self.assertTrue(later, "no multi-turn session")
        self.assertTrue(all(ln["think_s"] > 0 for ln in later))
        self.assertTrue(all(ln["think_s"] == 0 for ln in lines if ln["turn"] == 0))
        # a later turn starts after think time following the previous turn's end
        for s in sessions.values():
            s.sort(key=lambda ln: ln["turn"])
            for a, b in zip(s, s[1:]):
                self.assertGreaterEqual(b["ts_start"] - a["ts_end"], b["think_s"] * 0.9)
        # mostly streaming; trace-driven, diverse sizes
        self.assertGreater(sum(ln["stream"] for ln in lines) / len(lines), 0.5)
        self.assertGreater(len({ln["prompt_chars"] for ln in lines}), len(lines) // 2)
        self.assertGreater(len({ln["max_tokens"] for ln in lines}), 3)
        self.assertTrue(all(ln["prompt_chars"] < 2000 * 15 for ln in lines))  # capped at 2000 words
        self.assertTrue(all(ln["response_bytes"] > 0 for ln in ok))

    def test_app_bursty_big_prompts_short_outputs(self):
        rc, lines, err = run_actor(self.tmp, "app", "t-app", self.srv.url, "--duration", "25",
                                   "--max-requests", "16", "--time-scale", "20", *trace_args(self.tmp, "code"),
                                   keys=KEYS[:2])
        self.assertEqual(rc, 0, err)
        self.check_lines(lines, "app", "t-app", "requests", min_ok=16)
        self.assertGreaterEqual(sum(not ln["stream"] for ln in lines) / len(lines), 0.75)
        mts = sorted(ln["max_tokens"] for ln in lines)
        pcs = sorted(ln["prompt_chars"] for ln in lines)
        self.assertLess(mts[len(mts) // 2], 100)  # short outputs
        self.assertGreater(pcs[len(pcs) // 2], 2000)  # big prompts
        self.assertGreater(len(set(pcs)), len(pcs) // 2)  # diverse
        self.assertTrue({ln["endpoint"] for ln in lines} <= {"/v1/chat/completions", "/v1/completions"})

    def test_relay_user_many_users(self):
        users = [f"sk-user-{i}" for i in range(12)]
        srv = ServerProc(self.tmp, "relay", "--tokens-per-second", "4000", "--first-token-delay-ms", "5",
                         "--keys", ",".join(users))
        try:
            rc, lines, err = run_actor(self.tmp, "relay-user", "t-relay", srv.url, "--duration", "20",
                                       "--max-requests", "24", "--rate-per-key", "60", "--max-tokens", "600",
                                       "--min-tokens", "300", keys=users)
        finally:
            srv.stop()
        self.assertEqual(rc, 0, err)
        self.check_lines(lines, "relay-user", "t-relay", "openai-python", min_ok=24)
        per_user = collections.Counter(ln["key_index"] for ln in lines)
        self.assertGreaterEqual(len(per_user), 8)  # spread over many users
        self.assertLessEqual(max(per_user.values()), 6)  # each one modest


if __name__ == "__main__":
    unittest.main()
