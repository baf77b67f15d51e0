#!/usr/bin/env python3
"""Self-test of the benign heavy users (actorlib/population.py) and of the population's
human actors: each kind against a loopback inference_server.py with the lab's per-key
rate limit, under a hard timeout.  Run from this folder:
python3 -m unittest -v test_population
"""

from __future__ import annotations

import collections
import shutil
import tempfile
import unittest

from testkit.actor_harness import KEYS, ServerProc, run_actor, trace_args

RATE_LIMIT_RPM = "120"  # the lab's (xtask/src/lab/mod.rs)


def ok_lines(lines: list[dict]) -> list[dict]:
    return [ln for ln in lines if ln["status"] == 200 and ln["error"] is None]


class PopulationTests(unittest.TestCase):
    tmp: str
    srv: ServerProc

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="siphon-population-test-")
        cls.srv = ServerProc(cls.tmp, "pop", "--tokens-per-second", "4000", "--first-token-delay-ms", "5",
                             "--rate-limit-rpm", RATE_LIMIT_RPM)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_kind(self, kind: str, actor_id: str, *extra: str, keys=None) -> list[dict]:
        rc, lines, err = run_actor(self.tmp, kind, actor_id, self.srv.url, *extra, keys=keys)
        self.assertEqual(rc, 0, err)
        self.assertTrue(lines, err)
        self.assertFalse([ln for ln in lines if ln["status"] == 429], "a benign kind hit the rate limit")
        self.assertTrue(all(ln["kind"] == kind and ln["actor_id"] == actor_id for ln in lines))
        return lines

    @staticmethod
    def rpm(lines: list[dict]) -> float:
        ts = sorted(ln["ts_start"] for ln in lines)
        return 60.0 * (len(ts) - 1) / max(1e-6, ts[-1] - ts[0])

    def test_batch_long_inputs_short_outputs_under_its_limit(self):
        lines = self.run_kind("batch", "t-batch", "--duration", "8", "--max-requests", "10",
                              "--rate-per-key", "100", keys=KEYS[:1])
        ok = ok_lines(lines)
        self.assertGreaterEqual(len(ok), 9)
        self.assertEqual({ln["key_index"] for ln in lines}, {0})
        self.assertFalse(any(ln["stream"] for ln in lines))
        self.assertTrue(all(ln["prompt_chars"] > 3000 for ln in lines))  # >= 800 words
        self.assertTrue(all(ln["max_tokens"] <= 256 for ln in lines))
        # flat out, but the limiter holds the key under --rate-per-key
        self.assertLessEqual(self.rpm(lines), 100 * 1.05)
        self.assertGreater(self.rpm(lines), 60)

    def test_backend_many_users_one_key(self):
        lines = self.run_kind("backend", "t-backend", "--duration", "10", "--max-requests", "16",
                              "--rate-per-key", "60", "--concurrency", "8", keys=KEYS[:1])
        self.assertGreaterEqual(len(ok_lines(lines)), 5)
        self.assertEqual({ln["key_index"] for ln in lines}, {0})
        self.assertEqual(len({ln["user"] for ln in lines}), len(lines))  # each request a user's
        self.assertGreater(sum(ln["stream"] for ln in lines) / len(lines), 0.5)
        mts = sorted(ln["max_tokens"] for ln in lines)
        self.assertTrue(100 <= mts[len(mts) // 2] <= 600, mts)  # moderate outputs
        # users arrive independently (Poisson), not on a clock
        ts = sorted(ln["ts_start"] for ln in lines)
        gaps = [b - a for a, b in zip(ts, ts[1:])]
        mean = sum(gaps) / len(gaps)
        sd = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5
        self.assertGreater(sd / mean, 0.25)

    def test_ci_idle_then_fixed_suite_burst(self):
        args = ("--duration", "12", "--suite-size", "8", "--start-after", "20", "--time-scale", "10",
                "--rate-per-key", "110")
        lines = self.run_kind("ci", "t-ci", *args, keys=KEYS[:1])
        self.assertEqual(len(ok_lines(lines)), 8)  # the whole suite, then idle
        self.assertEqual(sorted(ln["item"] for ln in lines), list(range(8)))
        first = min(ln["ts_start"] for ln in lines)
        again = self.run_kind("ci", "t-ci2", *args, "--seed", "99", keys=KEYS[:1])
        # fixed prompts: the same suite whatever the seed
        by_item = lambda ls: {ln["item"]: (ln["prompt_chars"], ln["max_tokens"]) for ln in ls}  # noqa: E731
        self.assertEqual(by_item(lines), by_item(again))
        self.assertTrue(all(not ln["stream"] for ln in lines))
        self.assertLessEqual(self.rpm(lines), 110 * 1.05)
        self.assertGreater(first, 0)

    def test_agent_context_grows_think_is_short(self):
        lines = self.run_kind("agent", "t-agent", "--duration", "9", "--max-requests", "20",
                              "--time-scale", "10", keys=KEYS[:2])
        ok = ok_lines(lines)
        self.assertGreaterEqual(len(ok), 10)
        self.assertEqual({ln["key_index"] for ln in lines}, {0, 1})  # one loop per key
        by_task = collections.defaultdict(list)
        for ln in ok:
            by_task[(ln["key_index"], ln["task"])].append(ln)
        grew = 0
        for turns in by_task.values():
            turns.sort(key=lambda ln: ln["turn"])
            for a, b in zip(turns, turns[1:]):
                self.assertGreater(b["prompt_chars"], a["prompt_chars"])  # context grows
                gap = b["ts_start"] - a["ts_end"]
                self.assertTrue(0.15 <= gap <= 3.0, gap)  # tool time 0.2-2 s at 10x
                grew += 1
        self.assertGreater(grew, 3)
        self.assertTrue(all(ln["max_tokens"] <= 700 for ln in lines))

    def test_office_many_keys_one_address(self):
        # the office: many users' keys behind one NAT address (the actor binds it)
        lines = self.run_kind("human", "t-office", "--duration", "15", "--max-requests", "24",
                              "--time-scale", "100", "--trace-fraction", "0.05", "--concurrency", "6",
                              "--user-order", "round-robin", "--source-ips", "127.0.0.1",
                              *trace_args(self.tmp, "conv"), keys=KEYS)
        # round-robin: every person of the office shows up
        self.assertEqual({ln["key_index"] for ln in lines}, set(range(len(KEYS))))
        self.assertEqual({ln["source_ip"] for ln in lines}, {"127.0.0.1"})


if __name__ == "__main__":
    unittest.main()
