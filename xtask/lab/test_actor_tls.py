#!/usr/bin/env python3
"""Self-test of actors.py over TLS: the far client through a SOCKS5 proxy, the lab CA
checked by every client library, and (when a `litellm` executable is found, LITELLM_BIN or
PATH; it is never installed from here) relay users through LiteLLM to a TLS ingress.

Run from this folder:  python3 -m unittest -v test_actor_tls
(helpers: testkit/actor_harness.py, testkit/proxies.py)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

from testkit.actor_harness import KEYS, LITELLM_DIR, ActorCase, ServerProc, make_ca, run_actor
from testkit.proxies import Socks5Proxy, TLSTerminator


class ActorTLSTests(ActorCase):
    def test_far_client_socks5_tls(self):
        if shutil.which("openssl") is None:
            self.skipTest("openssl CLI not available")
        ca, crt, key = make_ca(self.tmp)
        tls = TLSTerminator(crt, key, self.srv.port)
        socks = Socks5Proxy()
        try:
            rc, lines, err = run_actor(
                self.tmp, "far-client", "t-far", f"https://localhost:{tls.port}", "--duration", "20",
                "--max-requests", "5", "--time-scale", "20", "--ca-file", ca,
                "--proxy", f"socks5h://127.0.0.1:{socks.port}", keys=KEYS[:1])
        finally:
            tls.close()
            socks.close()
        self.assertEqual(rc, 0, err)
        self.check_lines(lines, "far-client", "t-far", "curl", min_ok=5)
        # every connection went through the proxy, with the name resolved there
        self.assertGreaterEqual(len(socks.connects), 5)
        self.assertEqual({c for c in socks.connects}, {("localhost", tls.port)})
        self.assertGreaterEqual(tls.handshakes, 5)

    def test_tls_verified_against_ca_for_every_client(self):
        if shutil.which("openssl") is None:
            self.skipTest("openssl CLI not available")
        ca, crt, key = make_ca(self.tmp)
        tls = TLSTerminator(crt, key, self.srv.port)
        base = f"https://localhost:{tls.port}"
        try:
            for lib in ("openai-python", "curl", "requests"):
                rc, lines, err = run_actor(self.tmp, "harvester", f"t-tls-{lib}", base, "--level", "h1",
                                           "--client", lib, "--duration", "15", "--max-requests", "2",
                                           "--concurrency", "1", "--ca-file", ca)
                self.assertEqual(rc, 0, err)
                self.check_lines(lines, "harvester", f"t-tls-{lib}", lib, min_ok=2)
                # without the lab CA the certificate must be rejected, not ignored
                before = tls.failed_handshakes
                rc, lines, err = run_actor(self.tmp, "harvester", f"t-notls-{lib}", base, "--level", "h1",
                                           "--client", lib, "--duration", "15", "--max-requests", "2",
                                           "--concurrency", "1")
                self.assertEqual(rc, 1, err)
                self.assertTrue(lines and all(ln["status"] is None and ln["error"] for ln in lines), lines)
                time.sleep(0.2)
                self.assertGreater(tls.failed_handshakes, before)
        finally:
            tls.close()


@unittest.skipUnless(os.environ.get("LITELLM_BIN") or shutil.which("litellm"), "litellm not installed")
class LiteLLMTest(unittest.TestCase):
    """relay-user -> LiteLLM (custom_auth, 3 upstream keys) -> TLS -> inference server."""

    def test_litellm_router(self):
        if shutil.which("openssl") is None:
            self.skipTest("openssl CLI not available")
        tmp = tempfile.mkdtemp(prefix="siphon-litellm-test-")
        up_keys = KEYS[:3]
        srv = ServerProc(tmp, "upstream", "--tokens-per-second", "4000", "--first-token-delay-ms", "5")
        ca, crt, key = make_ca(tmp)
        tls = TLSTerminator(crt, key, srv.port)
        proc = None
        err = None
        try:
            cfg = os.path.join(tmp, "litellm", "config.yaml")
            subprocess.run([sys.executable, os.path.join(LITELLM_DIR, "render_config.py"),
                            "--ingress-base", f"https://localhost:{tls.port}/v1", "--upstream-keys", ",".join(up_keys),
                            "--ca-file", ca, "--out", cfg], check=True, timeout=30)
            with socket.create_server(("127.0.0.1", 0)) as s:
                port = s.getsockname()[1]
            env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
            env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
            exe = os.environ.get("LITELLM_BIN") or shutil.which("litellm")
            err = open(os.path.join(tmp, "litellm.err"), "wb")  # noqa: SIM115 (closed in finally)
            proc = subprocess.Popen([exe, "--config", cfg, "--host", "127.0.0.1", "--port", str(port)],
                                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env, cwd=tmp)
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(base + "/health/liveliness", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.5)
            self.assertIsNone(proc.poll(), "litellm exited")
            users = [f"sk-user-{i}" for i in range(1, 11)]
            rc, lines, aerr = run_actor(tmp, "relay-user", "t-litellm", base, "--duration", "40", "--max-requests", "20",
                                        "--rate-per-key", "60", "--min-tokens", "100", "--max-tokens", "300",
                                        "--stream-prob", "0.5", keys=users, timeout=90)
            self.assertEqual(rc, 0, aerr)
            ok = [ln for ln in lines if ln["status"] == 200 and ln["error"] is None]
            self.assertEqual(len(ok), 20, lines)
            self.assertTrue(any(ln["stream"] for ln in ok) and any(not ln["stream"] for ln in ok))
            posts = [e for e in srv.entries() if e.get("method") == "POST" and e.get("status") == 200]
            self.assertGreaterEqual(len(posts), 20)
            self.assertEqual({e["key_id"] for e in posts}, {0, 1, 2})  # load-balanced over upstream keys
            # a key that is not sk-user-* is refused
            rc, lines, _ = run_actor(tmp, "relay-user", "t-litellm-bad", base, "--duration", "10",
                                     "--max-requests", "1", keys=["sk-other-1"])
            self.assertEqual(rc, 1)
            self.assertEqual(lines[0]["status"], 401)
        finally:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            if err is not None:
                err.close()
            tls.close()
            srv.stop()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
