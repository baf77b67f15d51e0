"""Test helpers for actors.py (the actors use the installed openai SDK,
requests and the curl binary, as in the lab).

Everything listens on loopback only: inference_server.py subprocesses
(plain http, --port 0), an in-process TLS terminator in front of one of them
(certificates from a throw-away CA made with the openssl CLI, see proxies.py)
and an in-process SOCKS5 proxy that only connects to loopback.  Every actor
runs as a subprocess with --max-requests and a short --duration, under a hard
timeout, and is stopped by its own Popen handle.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

LAB_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACTORS = os.path.join(LAB_DIR, "actors.py")
SERVER = os.path.join(LAB_DIR, "inference_server.py")
LITELLM_DIR = os.path.join(LAB_DIR, "litellm")
TRACE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(LAB_DIR))), "shared", "data", "llm-traces")
KEYS = [f"sk-lab-actor-{i:02d}" for i in range(6)]
ACTOR_TIMEOUT = 60.0

LOG_FIELDS = {"ts_start", "ts_end", "actor_id", "kind", "client_lib", "key_index", "source_ip", "status",
              "stream", "max_tokens", "prompt_chars", "response_bytes", "ttfb_s", "error"}


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


class ActorCase(unittest.TestCase):
    """Tests sharing one keyed inference server (fast tokens) and a temporary folder for
    logs, with the checks every actor log must pass."""

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
