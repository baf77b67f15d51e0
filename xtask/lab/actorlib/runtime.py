"""Bounded execution for one actor process.

* Deadline: no request starts after --duration seconds; requests still in
  flight then get --drain-seconds to finish, after which they are abandoned
  (logged with error "interrupted: ...", curl children terminated).
* Budget: at most --max-requests requests are *started* (every HTTP attempt
  counts, retries included).  When it is used up the actor waits for the
  requests in flight (bounded by the deadline + drain) and exits.
* SIGTERM/SIGINT: no new requests; in-flight ones get at most
  SIGNAL_GRACE_S, then the same abandonment as above; the log is flushed.
* The log is JSON lines, one per request, flushed per line.  A request is
  logged exactly once: by its worker when it ends, or by the supervisor when it
  is abandoned, whichever comes first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

from jsonlines import JsonLines

SIGNAL_GRACE_S = 1.0


class JsonLog(JsonLines):
    """The actor's request log (see jsonlines.py)."""


class Record:
    """One HTTP request as the actor saw it."""

    __slots__ = ("rt", "fields", "t_start_mono", "ts_start", "first_byte_mono", "nbytes",
                 "status", "logged", "proc")

    def __init__(self, rt: "Runtime", fields: dict):
        self.rt = rt
        self.fields = fields
        self.ts_start = time.time()
        self.t_start_mono = time.monotonic()
        self.first_byte_mono: float | None = None
        self.nbytes = 0
        self.status: int | None = None
        self.logged = False
        self.proc: subprocess.Popen | None = None

    def on_bytes(self, n: int) -> None:
        if n <= 0:
            return
        if self.first_byte_mono is None:
            self.first_byte_mono = time.monotonic()
        self.nbytes += n

    def to_json(self, status: int | None, error: str | None) -> dict:
        now_mono = time.monotonic()
        ttfb = None if self.first_byte_mono is None else round(self.first_byte_mono - self.t_start_mono, 6)
        f = self.fields
        out = {
            "ts_start": round(self.ts_start, 6),
            "ts_end": round(self.ts_start + (now_mono - self.t_start_mono), 6),
            "actor_id": self.rt.actor_id,
            "kind": self.rt.kind,
            "client_lib": f["client_lib"],
            "key_index": f["key_index"],
            "source_ip": f.get("source_ip"),
            "status": status,
            "stream": bool(f["stream"]),
            "max_tokens": f.get("max_tokens"),
            "prompt_chars": f.get("prompt_chars", 0),
            "response_bytes": self.nbytes,
            "ttfb_s": ttfb,
            "error": error,
        }
        for k, v in f.items():  # extra labels (level, session, turn, head, endpoint, ...)
            if k not in out and k not in ("client_lib", "key_index", "source_ip", "stream"):
                out[k] = v
        return out


class Runtime:
    def __init__(self, *, actor_id: str, kind: str, duration: float, max_requests: int | None,
                 log_path: str, drain_s: float):
        self.actor_id = actor_id
        self.kind = kind
        self.t0 = time.monotonic()
        self.deadline = self.t0 + duration
        self.max_requests = max_requests
        self.drain_s = max(0.0, drain_s)
        self.log = JsonLog(log_path)
        self.no_more = threading.Event()  # no new requests (deadline, budget, signal)
        self.reason: str | None = None
        self.abort_at: float | None = None  # monotonic time to abandon in-flight requests
        self.lock = threading.Lock()
        self.started = 0
        self.ok = 0
        self.failed = 0
        self.interrupted = 0  # abandoned at stop time (counted in failed too)
        self.by_status: dict[str, int] = {}
        self.inflight: set[Record] = set()
        self.threads: set[threading.Thread] = set()
        self.signalled = False
        self.notes: dict[str, int] = {}

    # -- stopping ---------------------------------------------------------

    def _stop(self, reason: str, grace: float | None) -> None:
        with self.lock:
            if self.reason is None:
                self.reason = reason
            if grace is not None:
                at = time.monotonic() + grace
                if self.abort_at is None or at < self.abort_at:
                    self.abort_at = at
        self.no_more.set()

    def install_signal_handlers(self) -> None:
        def on_signal(signum, frame):
            self.signalled = True
            self._stop(f"signal {signum}", SIGNAL_GRACE_S)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def stopping(self) -> bool:
        if not self.no_more.is_set() and time.monotonic() >= self.deadline:
            self._stop("duration", self.drain_s)
        return self.no_more.is_set()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def sleep(self, seconds: float) -> bool:
        """Interruptible sleep bounded by the deadline; False if the actor is
        stopping (then the caller must not start another request)."""
        if seconds > 0:
            end = min(time.monotonic() + seconds, self.deadline)
            while True:
                left = end - time.monotonic()
                if left <= 0 or self.no_more.wait(min(left, 0.5)):
                    break
        return not self.stopping()

    def sleep_until(self, t_mono: float) -> bool:
        return self.sleep(t_mono - time.monotonic())

    def acquire_slot(self, sem: threading.Semaphore) -> bool:
        while not self.stopping():
            if sem.acquire(timeout=0.2):
                return True
        return False

    def note(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.notes[name] = self.notes.get(name, 0) + n

    # -- requests ---------------------------------------------------------

    def begin(self, fields: dict) -> Record | None:
        """Reserve one request of the budget; None if the actor is stopping."""
        if self.stopping():
            return None
        with self.lock:
            if self.no_more.is_set():
                return None
            if self.max_requests is not None and self.started >= self.max_requests:
                return None
            self.started += 1
            if self.max_requests is not None and self.started >= self.max_requests:
                if self.reason is None:
                    self.reason = "max-requests"
                self.no_more.set()  # wake sleepers; the in-flight ones still finish
            rec = Record(self, fields)
            self.inflight.add(rec)
            return rec

    def end(self, rec: Record, status: int | None, error: str | None) -> bool:
        """Log the request (once).  True if this call logged it."""
        with self.lock:
            if rec.logged:
                return False
            rec.logged = True
            self.inflight.discard(rec)
            good = status is not None and 200 <= status < 300 and error is None
            if good:
                self.ok += 1
            else:
                self.failed += 1
            if error is not None and error.startswith("interrupted"):
                self.interrupted += 1
                k = "interrupted"
            else:
                k = str(status) if status is not None else "conn-error"
            self.by_status[k] = self.by_status.get(k, 0) + 1
        self.log.write(rec.to_json(status, error))
        return True

    # -- threads ----------------------------------------------------------

    def spawn(self, fn: Callable, *args, name: str | None = None) -> threading.Thread:
        def run():
            try:
                fn(*args)
            except Exception as e:  # a bug in an actor must not hang the process
                print(f"actor {self.actor_id}: thread {name} failed: {e!r}", file=sys.stderr)
                import traceback
                traceback.print_exc(file=sys.stderr)
            finally:
                with self.lock:
                    self.threads.discard(threading.current_thread())

        t = threading.Thread(target=run, name=name, daemon=True)
        with self.lock:
            self.threads.add(t)
        t.start()
        return t

    def supervise(self) -> None:
        """Block until all actor threads are done or the abandonment time."""
        while True:
            self.stopping()  # turns the deadline into no_more + abort_at
            with self.lock:
                alive = [t for t in self.threads if t.is_alive()]
                abort_at = self.abort_at
            if not alive:
                return
            if self.no_more.is_set() and abort_at is None:
                # budget used up: wait for in-flight requests until deadline + drain
                abort_at = self.deadline + self.drain_s
            if abort_at is not None and time.monotonic() >= abort_at:
                self._abandon()
                return
            time.sleep(0.05)

    def _abandon(self) -> None:
        with self.lock:
            recs = list(self.inflight)
        # curl children: terminate them, give their reader threads a moment to log
        procs = [r.proc for r in recs if r.proc is not None]
        for p in procs:
            try:
                if p.poll() is None:
                    p.terminate()
            except OSError:
                pass
        end = time.monotonic() + 0.5
        for p in procs:
            try:
                p.wait(timeout=max(0.01, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    p.kill()
                except OSError:
                    pass
        time.sleep(0.05)
        with self.lock:
            recs = list(self.inflight)
        why = self.reason or "stopped"
        for r in recs:
            self.end(r, r.status, f"interrupted: {why}")

    def finish(self) -> int:
        self.log.close()
        with self.lock:
            summary = {"actor_id": self.actor_id, "kind": self.kind, "requests": self.started,
                       "ok": self.ok, "failed": self.failed, "by_status": self.by_status,
                       "stop_reason": self.reason or "done", "elapsed_s": round(time.monotonic() - self.t0, 3)}
            summary.update(self.notes)
        print(json.dumps(summary), file=sys.stderr)
        if self.ok > 0:
            return 0
        if self.signalled and self.failed == self.interrupted:
            # stopped by SIGTERM/SIGINT before any request could complete: not
            # a failure of the actor (every request it made was cut short)
            return 0
        return 1
