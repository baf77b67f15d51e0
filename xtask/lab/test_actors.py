#!/usr/bin/env python3
"""Self-test of actors.py (stdlib unittest; uses the installed openai SDK,
requests and the curl binary, like the actors themselves).

Run from this folder:  python3 -m unittest -v test_actors

Everything listens on loopback only: inference_server.py subprocesses
(plain http, --port 0), an in-process TLS terminator in front of one of them
(certificates from a throw-away CA made with the openssl CLI) and an
in-process SOCKS5 proxy that only connects to loopback.  Every actor runs as a
subprocess with --max-requests and a short --duration, under a hard timeout,
and is stopped by its own Popen handle.  The optional LiteLLM test runs only
when a `litellm` executable is found (LITELLM_BIN or PATH); it is never
installed from here.
"""

from __future__ import annotations

import collections
import datetime
import ipaddress
import json
import os
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ACTORS = os.path.join(HERE, "actors.py")
SERVER = os.path.join(HERE, "inference_server.py")
LITELLM_DIR = os.path.join(HERE, "litellm")
TRACE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "shared", "data", "llm-traces")
KEYS = [f"sk-lab-actor-{i:02d}" for i in range(6)]
ACTOR_TIMEOUT = 60.0

LOG_FIELDS = {"ts_start", "ts_end", "actor_id", "kind", "client_lib", "key_index", "source_ip", "status",
              "stream", "max_tokens", "prompt_chars", "response_bytes", "ttfb_s", "error"}

sys.path.insert(0, HERE)


# --------------------------------------------------------------------------
# helpers: processes owned by the test
# --------------------------------------------------------------------------


class ServerProc:
    """One inference_server.py subprocess."""

    def __init__(self, tmp: str, name: str, *extra: str):
        self.log_path = os.path.join(tmp, f"{name}-server.jsonl")
        ready = os.path.join(tmp, f"{name}-ready.json")
        self.err_path = os.path.join(tmp, f"{name}-server.err")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, SERVER, "--listen", "127.0.0.1", "--port", "0", "--ready-file", ready,
             "--log", self.log_path, "--keys", ",".join(KEYS), "--shutdown-grace", "1", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._err)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not os.path.exists(ready) and self.proc.poll() is None:
            time.sleep(0.02)
        if not os.path.exists(ready):
            self.stop()
            raise RuntimeError("inference server did not start")
        with open(ready) as fh:
            self.port = json.load(fh)["port"]
        self.url = f"http://127.0.0.1:{self.port}"

    def entries(self) -> list[dict]:
        with open(self.log_path) as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.close()


def run_actor(tmp: str, kind: str, actor_id: str, base_url: str, *extra: str, keys=None,
              timeout: float = ACTOR_TIMEOUT) -> tuple[int, list[dict], str]:
    log = os.path.join(tmp, f"{actor_id}.jsonl")
    cmd = [sys.executable, ACTORS, kind, "--actor-id", actor_id, "--base-url", base_url,
           "--keys", ",".join(keys or KEYS), "--seed", "7", "--log", log, *extra]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=5)
        raise AssertionError(f"actor {actor_id} did not finish in {timeout}s: {err.decode()[-2000:]}")
    lines = []
    if os.path.exists(log):
        with open(log) as fh:
            lines = [json.loads(line) for line in fh]
    return p.returncode, lines, err.decode("utf-8", "replace")


def trace_args(tmp: str, name: str) -> list[str]:
    """--trace for human (conv) / app (code): the shared Azure trace when it is
    there, else a small synthetic one with the same columns."""
    real = os.path.join(TRACE_DIR, f"AzureLLMInferenceTrace_{name}.csv")
    if os.path.isfile(real):
        return ["--trace", real]
    import random
    rng = random.Random(name)
    path = os.path.join(tmp, f"synthetic_{name}.csv")
    with open(path, "w") as fh:
        fh.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        t = 0.0
        for _ in range(3000):
            t += rng.expovariate(3.0) if name == "conv" or rng.random() < 0.95 else rng.uniform(2, 20)
            ctx = int(rng.lognormvariate(7.0, 0.9))
            gen = int(rng.lognormvariate(5.0, 0.8)) if name == "conv" else int(rng.lognormvariate(2.6, 0.6)) + 1
            ts = datetime.datetime(2023, 11, 16, 18, 0, 0) + datetime.timedelta(seconds=t)
            fh.write(f"{ts:%Y-%m-%d %H:%M:%S}.{ts.microsecond:06d}0,{ctx},{gen}\n")
    return ["--trace", path]


def make_ca(tmp: str) -> tuple[str, str, str]:
    """(ca.pem, server cert, server key) for localhost/127.0.0.1."""
    ca_key, ca = os.path.join(tmp, "ca.key"), os.path.join(tmp, "ca.pem")
    key, csr, crt = (os.path.join(tmp, n) for n in ("srv.key", "srv.csr", "srv.pem"))
    ext = os.path.join(tmp, "srv.ext")
    with open(ext, "w") as fh:
        fh.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                 "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                 "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    q = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
                    "-days", "2", "-subj", "/CN=Siphon lab test CA",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign"], **q)
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                    "-subj", "/CN=localhost"], **q)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                    "-out", crt, "-days", "2", "-extfile", ext], **q)
    return ca, crt, key


class TLSTerminator:
    """In-process TLS front (like the lab's haproxy) forwarding to a plain
    loopback port.  One thread per connection, select loop, bounded timeouts."""

    def __init__(self, cert: str, key: str, backend_port: int):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.backend_port = backend_port
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.handshakes = 0
        self.failed_handshakes = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    def _handle(self, c: socket.socket):
        c.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError):
            with self.lock:
                self.failed_handshakes += 1
            c.close()
            return
        with self.lock:
            self.handshakes += 1
        try:
            up = socket.create_connection(("127.0.0.1", self.backend_port), timeout=30)
        except OSError:
            tls.close()
            return
        try:
            while True:
                ready = [tls] if tls.pending() else select.select([tls, up], [], [], 30)[0]
                if not ready:
                    return
                for s in ready:
                    try:
                        data = s.recv(65536)
                    except ssl.SSLWantReadError:
                        continue
                    if not data:
                        return
                    (up if s is tls else tls).sendall(data)
        except (OSError, ssl.SSLError):
            return
        finally:
            for s in (tls, up):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.lsock.close()


class Socks5Proxy:
    """Minimal in-process SOCKS5 (no auth, CONNECT only) that connects only to
    loopback; records the requested (host, port) of every CONNECT."""

    def __init__(self):
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.connects: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    @staticmethod
    def _exact(s: socket.socket, n: int) -> bytes:
        b = b""
        while len(b) < n:
            d = s.recv(n - len(b))
            if not d:
                raise ConnectionError("eof")
            b += d
        return b

    def _handle(self, c: socket.socket):
        c.settimeout(30)
        up = None
        try:
            ver, nm = self._exact(c, 2)
            self._exact(c, nm)
            if ver != 5:
                return
            c.sendall(b"\x05\x00")
            ver, cmd, _, atyp = self._exact(c, 4)
            if atyp == 1:
                host = socket.inet_ntoa(self._exact(c, 4))
            elif atyp == 3:
                host = self._exact(c, self._exact(c, 1)[0]).decode()
            elif atyp == 4:
                host = socket.inet_ntop(socket.AF_INET6, self._exact(c, 16))
            else:
                return
            port = struct.unpack("!H", self._exact(c, 2))[0]
            with self.lock:
                self.connects.append((host, port))
            try:
                loop = host == "localhost" or ipaddress.ip_address(host).is_loopback
            except ValueError:
                loop = False
            if cmd != 1 or not loop:
                c.sendall(b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00")  # not allowed
                return
            up = socket.create_connection(("127.0.0.1", port), timeout=30)
            c.sendall(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")

            def pump(a, b):
                try:
                    while True:
                        d = a.recv(65536)
                        if not d:
                            break
                        b.sendall(d)
                except OSError:
                    pass
                try:
                    b.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

            t = threading.Thread(target=pump, args=(up, c), daemon=True)
            t.start()
            pump(c, up)
            t.join(30)
        except (OSError, ValueError, ConnectionError):
            pass
        finally:
            for s in (c, up):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def close(self):
        self.lsock.close()


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


class ActorTests(unittest.TestCase):
    tmp: str
    srv: ServerProc

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="siphon-actors-test-")
        cls.srv = ServerProc(cls.tmp, "main", "--tokens-per-second", "4000", "--first-token-delay-ms", "5")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- shared checks ------------------------------------------------------

    def check_lines(self, lines: list[dict], kind: str, actor_id: str, lib: str, min_ok: int = 1):
        self.assertTrue(lines, "no log lines")
        for ln in lines:
            self.assertTrue(LOG_FIELDS.issubset(ln), f"missing fields: {LOG_FIELDS - set(ln)}")
            self.assertEqual(ln["kind"], kind)
            self.assertEqual(ln["actor_id"], actor_id)
            self.assertEqual(ln["client_lib"], lib)
            self.assertIsInstance(ln["key_index"], int)
            self.assertGreaterEqual(ln["ts_end"], ln["ts_start"])
            self.assertIsInstance(ln["stream"], bool)
            self.assertIsInstance(ln["prompt_chars"], int)
            self.assertIsInstance(ln["response_bytes"], int)
            for k in KEYS:
                self.assertNotIn(k, json.dumps(ln), "an API key leaked into the log")
            if ln["status"] == 200 and ln["error"] is None:
                self.assertGreater(ln["response_bytes"], 0)
                self.assertIsNotNone(ln["ttfb_s"])
                self.assertGreaterEqual(ln["ttfb_s"], 0)
                self.assertLessEqual(ln["ttfb_s"], ln["ts_end"] - ln["ts_start"] + 1e-3)
        ok = [ln for ln in lines if ln["status"] == 200 and ln["error"] is None]
        self.assertGreaterEqual(len(ok), min_ok, f"successful requests: {len(ok)} of {len(lines)}")
        return ok

    # -- kinds -----------------------------------------------------------------

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


class LibTests(unittest.TestCase):
    def test_text_is_diverse(self):
        import random

        from actorlib import text
        rng = random.Random(1)
        prompts = [text.human_message(rng, 200, "jazz harmony", 0) for _ in range(50)]
        self.assertEqual(len(set(prompts)), 50)
        self.assertTrue(all(150 <= text.word_count(p) <= 260 for p in prompts), [text.word_count(p) for p in prompts])
        hp = {text.harvest_prompt(rng, i) for i in range(200)}
        self.assertEqual(len(hp), 200)
        _, code = text.app_prompt(rng, 1000)
        self.assertTrue(800 <= text.word_count(code) <= 1300)

    @unittest.skipUnless(os.path.isdir(TRACE_DIR), "shared traces not present")
    def test_trace_arrivals(self):
        import random

        from actorlib import trace
        rows = trace.load(os.path.join(TRACE_DIR, "AzureLLMInferenceTrace_code.csv"))
        self.assertGreater(len(rows), 1000)
        arr = trace.arrivals(rows, random.Random(3), 0.05, 10.0)
        offs = [next(arr)[0] for _ in range(200)]
        self.assertEqual(offs[0], 0.0)
        self.assertEqual(offs, sorted(offs))
        gaps = [b - a for a, b in zip(offs, offs[1:])]
        mean = sum(gaps) / len(gaps)
        var = sum((g - mean) ** 2 for g in gaps) / len(gaps)
        self.assertGreater(var ** 0.5 / mean, 1.2)  # bursty: more variable than Poisson (CV 1)


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
