#!/usr/bin/env python3
"""Self-test of actors.py runs: SIGTERM stops promptly with the log flushed, --duration
bounds the run, bad arguments exit 2, an unreachable server exits 1.

Run from this folder:  python3 -m unittest -v test_actor_runs
(helpers: testkit/actor_harness.py)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

from testkit.actor_harness import ACTORS, KEYS, ActorCase, ServerProc, run_actor


class ActorRunTests(ActorCase):
    def test_sigterm_stops_promptly_and_flushes(self):
        slow = ServerProc(self.tmp, "slow", "--tokens-per-second", "100")
        try:
            for kind in (["harvester", "--level", "h1"], ["harvester", "--level", "h2"]):
                log = os.path.join(self.tmp, f"sig-{kind[-1]}.jsonl")
                p = subprocess.Popen([sys.executable, ACTORS, *kind, "--actor-id", "t-sig", "--base-url", slow.url,
                                      "--keys", KEYS[0], "--duration", "60", "--log", log, "--min-tokens", "50",
                                      "--max-tokens", "400"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                try:
                    time.sleep(4.0)
                    t = time.monotonic()
                    p.send_signal(signal.SIGTERM)
                    _, err = p.communicate(timeout=10)
                    took = time.monotonic() - t
                finally:
                    if p.poll() is None:
                        p.kill()
                        p.wait(5)
                self.assertEqual(p.returncode, 0, err)
                self.assertLess(took, 3.0)
                with open(log) as fh:
                    lines = [json.loads(x) for x in fh]
                self.assertTrue(any(ln["status"] == 200 and ln["error"] is None for ln in lines))
                self.assertIn("signal", err.decode())
        finally:
            slow.stop()

    def test_duration_bounds_the_run(self):
        t = time.monotonic()
        rc, lines, err = run_actor(self.tmp, "harvester", "t-dur", self.srv.url, "--level", "h2", "--duration", "3",
                                   "--time-scale", "10", "--drain-seconds", "1")
        took = time.monotonic() - t
        self.assertEqual(rc, 0, err)
        self.assertLess(took, 3 + 1 + 3)  # duration + drain + interpreter start/stop
        self.check_lines(lines, "harvester", "t-dur", "openai-python")
        self.assertIn('"stop_reason": "duration"', err)
        t_end = max(ln["ts_start"] for ln in lines)
        self.assertLess(t_end - min(ln["ts_start"] for ln in lines), 3.5)

    def test_bad_arguments_exit_2(self):
        for extra in (["harvester"], ["harvester", "--level", "h4"], ["human", "--source-ips", "not-an-ip"],
                      ["app", "--max-requests", "0"], ["app", "--trace", "/nonexistent.csv"],
                      ["far-client", "--ca-file", "/nonexistent.pem"], ["human", "--time-scale", "0"]):
            p = subprocess.run([sys.executable, ACTORS, *extra, "--actor-id", "x", "--base-url", self.srv.url,
                                "--keys", "k", "--duration", "1", "--log", os.path.join(self.tmp, "bad.jsonl")],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            self.assertEqual(p.returncode, 2, (extra, p.stderr.decode()))

    def test_unreachable_exits_1(self):
        s = socket.create_server(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        rc, lines, err = run_actor(self.tmp, "harvester", "t-unreach", f"http://127.0.0.1:{port}", "--level", "h1",
                                   "--duration", "10", "--max-requests", "3")
        self.assertEqual(rc, 1, err)
        self.assertEqual(len(lines), 3)
        self.assertTrue(all(ln["status"] is None and ln["error"] for ln in lines))


if __name__ == "__main__":
    unittest.main()
