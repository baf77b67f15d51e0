"""Actor behaviours.  Each run_<kind>(ctx) starts its threads with
ctx.rt.spawn() and returns; actors.py then supervises them."""

from __future__ import annotations

import heapq
import itertools
import math
import queue
import random
import threading
import time
from dataclasses import dataclass

from . import text, trace
from .clients import Call, Config, Result, make_session
from .runtime import Runtime

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


@dataclass
class Ctx:
    args: object
    rt: Runtime
    cfg: Config
    keys: list[str]
    ips: list[str]
    lib: str
    model: str
    scale: float
    rng: random.Random
    rng_lock: threading.Lock

    def child_rng(self) -> random.Random:
        with self.rng_lock:
            return random.Random(self.rng.getrandbits(64))

    def session(self, key_index: int, source_ip: str | None, pool: int = 10):
        return make_session(self.lib, self.rt, self.cfg, self.keys[key_index], source_ip, pool=pool)


def do_request(ctx: Ctx, sess, call: Call, key_index: int, source_ip: str | None, prompt_chars: int,
               **labels) -> Result | None:
    """One HTTP request, logged.  None if the actor is stopping / out of budget."""
    fields = {"client_lib": sess.lib, "key_index": key_index, "source_ip": source_ip,
              "stream": call.stream, "max_tokens": call.body.get("max_tokens"),
              "prompt_chars": prompt_chars, "endpoint": call.path, "model": call.body.get("model")}
    fields.update(labels)
    rec = ctx.rt.begin(fields)
    if rec is None:
        return None
    res = sess.request(rec, call)
    ctx.rt.end(rec, res.status, res.error)
    return res


def chat_call(model: str, messages: list[dict], max_tokens: int, stream: bool, want_text=False,
              **extra) -> tuple[Call, int]:
    body = {"model": model, "messages": messages, "max_tokens": int(max_tokens)}
    body.update(extra)
    if stream:
        body["stream"] = True
    chars = sum(len(m["content"]) for m in messages)
    return Call(CHAT, body, stream, want_text), chars


def completion_call(model: str, prompt: str, max_tokens: int, stream: bool, **extra) -> tuple[Call, int]:
    body = {"model": model, "prompt": prompt, "max_tokens": int(max_tokens)}
    body.update(extra)
    if stream:
        body["stream"] = True
    return Call(COMPLETIONS, body, stream), len(prompt)


def lognormal(rng: random.Random, median: float, sigma: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, rng.lognormvariate(math.log(median), sigma)))


def backoff_429(ctx: Ctx, res: Result, default: float, cap: float) -> bool:
    """Sleep what the server asked for (real time; the server's limiter is not
    time-scaled), capped.  False if the actor is stopping."""
    ra = res.retry_after if res.retry_after is not None else default
    return ctx.rt.sleep(min(cap, max(0.2, ra)))


# --------------------------------------------------------------------------
# human: chat sessions from the Azure conversation trace
# --------------------------------------------------------------------------


def run_human(ctx: Ctx) -> None:
    a = ctx.args
    rt = ctx.rt
    rows = trace.load(a.trace)
    rng = ctx.child_rng()
    arr = trace.arrivals(rows, rng, a.trace_fraction, ctx.scale)
    slots = threading.Semaphore(a.concurrency)
    # users: one key each; some users are more active than others
    weights = [1.0 / math.sqrt(i + 1) for i in range(len(ctx.keys))]
    user_order = list(range(len(ctx.keys)))
    rng.shuffle(user_order)
    # round-robin: a population where every person chats about once in the run (each comes
    # once before anyone comes twice), instead of a few regulars
    turns = itertools.cycle(user_order) if a.user_order == "round-robin" else None

    def dispatcher():
        t0 = time.monotonic()
        for sid in itertools.count(1):
            try:
                off, row, following = next(arr)
            except StopIteration:
                return
            if not rt.sleep_until(t0 + off):
                return
            if not slots.acquire(blocking=False):
                rt.note("sessions_dropped")  # every seat taken: this user does not show up
                continue
            ki = next(turns) if turns else user_order[rng.choices(range(len(ctx.keys)), weights)[0]]
            rt.spawn(session, sid, ki, [row] + following, ctx.child_rng(), name=f"session-{sid}")

    def session(sid: int, ki: int, rows_: list[trace.Row], srng: random.Random):
        ip = ctx.ips[ki % len(ctx.ips)] if ctx.ips else None
        sess = ctx.session(ki, ip, pool=2)
        try:
            _human_session(ctx, sess, sid, ki, ip, rows_, srng)
        finally:
            sess.close()
            slots.release()

    rt.spawn(dispatcher, name="human-dispatcher")


def _human_session(ctx: Ctx, sess, sid: int, ki: int, ip: str | None, rows_: list[trace.Row],
                   rng: random.Random) -> None:
    a = ctx.args
    rt = ctx.rt
    # 1..max_turns turns, geometric-like (many one-shot questions, some long chats)
    n_turns = 1
    while n_turns < a.max_turns and rng.random() < 0.62:
        n_turns += 1
    topic = rng.choice(text.TOPICS)
    history: list[dict] = []
    system = [{"role": "system", "content": text.system_prompt(rng)}] if rng.random() < 0.5 else []
    cap = a.max_prompt_words
    temperature = rng.choice((None, None, 0.7, 1.0))
    label = f"{ctx.rt.actor_id}/s{sid}"
    for turn in range(n_turns):
        think = 0.0
        if turn > 0:
            # reading the answer + typing the next question
            think = lognormal(rng, a.think_median, a.think_sigma, 2.0, 600.0) / ctx.scale
            if not rt.sleep(think):
                return
        row = rows_[min(turn, len(rows_) - 1)]
        target = min(cap, max(3, row.ctx))
        hist_words = sum(text.word_count(m["content"]) for m in history)
        new_words = max(min(target - hist_words, cap), rng.randint(4, 40))
        while history and hist_words + new_words > cap:  # the client's context window
            hist_words -= text.word_count(history.pop(0)["content"])
        msg = {"role": "user", "content": text.human_message(rng, new_words, topic, turn)}
        messages = system + history + [msg]
        stream = rng.random() < a.stream_prob
        extra = {"temperature": temperature} if temperature is not None else {}
        call, chars = chat_call(ctx.model, messages, max(1, row.gen), stream, want_text=True, **extra)
        res = None
        for attempt in range(2):  # a user retries once after a rate limit / error
            res = do_request(ctx, sess, call, ki, ip, chars, session=label, turn=turn,
                             think_s=round(think, 3), attempt=attempt)
            if res is None:
                return
            if res.ok:
                break
            if res.status == 429:
                if not backoff_429(ctx, res, 5.0, 30.0):
                    return
            elif not rt.sleep(lognormal(rng, 5.0, 0.5, 1.0, 30.0) / ctx.scale):
                return
        if res is None or not res.ok:
            return  # the user gives up
        history += [msg, {"role": "assistant", "content": res.text or ""}]


# --------------------------------------------------------------------------
# app: an automated code-assistant integration from the Azure code trace
# --------------------------------------------------------------------------


def run_app(ctx: Ctx) -> None:
    a = ctx.args
    rt = ctx.rt
    rows = trace.load(a.trace)
    rng = ctx.child_rng()
    arr = trace.arrivals(rows, rng, a.trace_fraction, ctx.scale)
    jobs: queue.Queue = queue.Queue(maxsize=max(8, 4 * a.concurrency))
    done = threading.Event()
    # tenants of the integration: one key each, Zipf-like activity
    weights = [1.0 / (i + 1) for i in range(len(ctx.keys))]

    def dispatcher():
        t0 = time.monotonic()
        try:
            for n in itertools.count():
                try:
                    off, row, _ = next(arr)
                except StopIteration:
                    return
                if not rt.sleep_until(t0 + off):
                    return
                ki = rng.choices(range(len(ctx.keys)), weights)[0]
                try:
                    jobs.put_nowait((n, row, ki))
                except queue.Full:
                    rt.note("jobs_dropped")
        finally:
            done.set()

    def worker(w: int):
        wrng = ctx.child_rng()
        ip = ctx.ips[w % len(ctx.ips)] if ctx.ips else None
        sessions: dict[int, object] = {}
        try:
            while not rt.stopping():
                try:
                    n, row, ki = jobs.get(timeout=0.2)
                except queue.Empty:
                    if done.is_set():
                        return
                    continue
                sess = sessions.get(ki)
                if sess is None:
                    sess = sessions[ki] = ctx.session(ki, ip, pool=2)
                if not _app_job(ctx, sess, wrng, n, row, ki, ip):
                    return
        finally:
            for s in sessions.values():
                s.close()

    rt.spawn(dispatcher, name="app-dispatcher")
    for w in range(a.concurrency):
        rt.spawn(worker, w, name=f"app-worker-{w}")


def _app_job(ctx: Ctx, sess, rng: random.Random, n: int, row: trace.Row, ki: int, ip: str | None) -> bool:
    a = ctx.args
    rt = ctx.rt
    words = min(a.max_prompt_words, max(20, row.ctx))
    instr, code = text.app_prompt(rng, words)
    stream = rng.random() < a.stream_prob
    if rng.random() < 0.75:
        msgs = [{"role": "system", "content": "You are a code assistant inside an IDE. Reply with code only."},
                {"role": "user", "content": f"{instr}\n\n{code}"}]
        call, chars = chat_call(ctx.model, msgs, max(1, row.gen), stream, temperature=0.2)
    else:
        call, chars = completion_call(ctx.model, f"{code}\n# {instr}\n", max(1, row.gen), stream,
                                      temperature=0.2, stop=["\n\n"])
    for attempt in range(3):  # the integration's retry policy
        res = do_request(ctx, sess, call, ki, ip, chars, job=n, attempt=attempt)
        if res is None:
            return False
        if res.ok:
            return True
        if res.status == 429:
            ok = backoff_429(ctx, res, 2.0, 20.0)
        elif res.status is None or res.status >= 500:
            ok = rt.sleep(0.5 * (2 ** attempt) * (0.5 + rng.random()))
        else:
            return True  # 4xx other than 429: give up on this job
        if not ok:
            return False
    return True


# --------------------------------------------------------------------------
# harvesters
# --------------------------------------------------------------------------


def _harvest_call(ctx: Ctx, rng: random.Random, i: int, lo: int, hi: int) -> tuple[Call, int]:
    prompt = text.harvest_prompt(rng, i)
    msgs = [{"role": "user", "content": prompt}]
    if rng.random() < 0.3:
        msgs.insert(0, {"role": "system", "content": "You are a knowledgeable expert. Answer at length."})
    stream = rng.random() < ctx.args.stream_prob
    return chat_call(ctx.model, msgs, rng.randint(lo, hi), stream)


def run_harvester(ctx: Ctx) -> None:
    a = ctx.args
    if a.level == "h3":
        return _run_hydra(ctx)
    counter = itertools.count(1)
    lock = threading.Lock()
    nkeys = 1 if a.level == "h1" else min(2, len(ctx.keys))
    ip = ctx.ips[0] if ctx.ips else None

    def worker(w: int):
        rng = ctx.child_rng()
        sessions = {ki: ctx.session(ki, ip, pool=2) for ki in range(nkeys)}
        try:
            while True:
                ki = rng.randrange(nkeys) if nkeys > 1 else 0
                with lock:
                    i = next(counter)
                call, chars = _harvest_call(ctx, rng, i, a.min_tokens, a.max_tokens)
                res = do_request(ctx, sessions[ki], call, ki, ip, chars, level=a.level, worker=w)
                if res is None:
                    return
                if res.status == 429:
                    if not backoff_429(ctx, res, 2.0, 30.0):
                        return
                elif res.status is None and not ctx.rt.sleep(1.0):
                    return
                if a.level == "h2":
                    gap = lognormal(rng, a.gap_median, 0.8, 0.05, 120.0)
                    if rng.random() < a.pause_prob:  # a human-looking break
                        gap += rng.uniform(20.0, 120.0)
                    if not ctx.rt.sleep(gap / ctx.scale):
                        return
        finally:
            for s in sessions.values():
                s.close()

    for w in range(a.concurrency):
        ctx.rt.spawn(worker, w, name=f"{a.level}-worker-{w}")


def _paced(ctx: Ctx, heads: list[tuple[int, str | None]], first_at, next_gap, make_call, labels,
           name: str) -> None:
    """Dispatch requests over heads (key index, source ip): each head at its own
    pace (next_gap(rng) seconds between its requests, real time), at most
    --concurrency requests in flight overall."""
    rt = ctx.rt
    a = ctx.args
    rng = ctx.child_rng()
    slots = threading.Semaphore(a.concurrency)
    sessions = [ctx.session(ki, ip, pool=4) for ki, ip in heads]
    hold: dict[int, float] = {}  # head -> not before (after a 429)
    counter = itertools.count(1)
    lock = threading.Lock()
    t0 = time.monotonic()
    heap = [(t0 + first_at(h, rng), h) for h in range(len(heads))]
    heapq.heapify(heap)

    def one(h: int, i: int, wrng: random.Random):
        try:
            ki, ip = heads[h]
            call, chars = make_call(wrng, i)
            res = do_request(ctx, sessions[h], call, ki, ip, chars, head=h, **labels)
            if res is not None and res.status == 429:
                ra = res.retry_after if res.retry_after is not None else 5.0
                with lock:
                    hold[h] = time.monotonic() + min(60.0, ra)
        finally:
            slots.release()

    def dispatcher():
        while heap:
            t, h = heapq.heappop(heap)
            with lock:
                t = max(t, hold.pop(h, 0.0))
            if not rt.sleep_until(t):
                return
            if not rt.acquire_slot(slots):
                return
            if rt.stopping():
                slots.release()
                return
            rt.spawn(one, h, next(counter), ctx.child_rng(), name=f"{name}-req")
            heapq.heappush(heap, (time.monotonic() + next_gap(rng), h))

    rt.spawn(dispatcher, name=f"{name}-dispatcher")


def _run_hydra(ctx: Ctx) -> None:
    a = ctx.args
    n = len(ctx.keys)
    heads = [(ki, ctx.ips[ki % len(ctx.ips)] if ctx.ips else None) for ki in range(n)]
    interval = 60.0 / a.rate_per_key

    # strict round robin: heads staggered evenly over one interval, each head
    # then spaced 5..15% above the per-key limit's interval
    _paced(ctx, heads,
           first_at=lambda h, rng: h * interval / n,
           next_gap=lambda rng: interval * rng.uniform(1.05, 1.15),
           make_call=lambda rng, i: _harvest_call(ctx, rng, i, a.min_tokens, a.max_tokens),
           labels={"level": "h3"}, name="h3")


# --------------------------------------------------------------------------
# relay-user: many end users behind an LLM router (LiteLLM)
# --------------------------------------------------------------------------


def run_relay_user(ctx: Ctx) -> None:
    a = ctx.args
    n = len(ctx.keys)
    heads = [(ki, ctx.ips[ki % len(ctx.ips)] if ctx.ips else None) for ki in range(n)]
    mean = 60.0 / a.rate_per_key
    _paced(ctx, heads,
           first_at=lambda h, rng: rng.uniform(0.0, mean),
           next_gap=lambda rng: max(0.5, rng.expovariate(1.0 / mean)),
           make_call=lambda rng, i: _harvest_call(ctx, rng, i, a.min_tokens, a.max_tokens),
           labels={}, name="relay")


# --------------------------------------------------------------------------
# far-client: moderate harvesting through a SOCKS5 relay, far away
# --------------------------------------------------------------------------


def run_far_client(ctx: Ctx) -> None:
    a = ctx.args
    counter = itertools.count(1)
    lock = threading.Lock()
    ip = ctx.ips[0] if ctx.ips else None

    def worker(w: int):
        rng = ctx.child_rng()
        ki = w % len(ctx.keys)
        sess = ctx.session(ki, ip, pool=2)
        try:
            while True:
                with lock:
                    i = next(counter)
                call, chars = _harvest_call(ctx, rng, i, a.min_tokens, a.max_tokens)
                res = do_request(ctx, sess, call, ki, ip, chars, worker=w)
                if res is None:
                    return
                if res.status == 429:
                    if not backoff_429(ctx, res, 2.0, 30.0):
                        return
                gap = lognormal(rng, a.gap_median, 0.6, 0.05, 60.0)
                if not ctx.rt.sleep(gap / ctx.scale):
                    return
        finally:
            sess.close()

    for w in range(a.concurrency):
        ctx.rt.spawn(worker, w, name=f"far-worker-{w}")


RUNNERS = {
    "human": run_human,
    "app": run_app,
    "harvester": run_harvester,
    "relay-user": run_relay_user,
    "far-client": run_far_client,
}
