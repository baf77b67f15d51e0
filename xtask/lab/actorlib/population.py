"""Benign heavy users: the legitimate workloads that are a detector's real false-alarm risk.

  batch    a batch summarisation job: one key, long documents in, a few bullet points
           out, as fast as its client-side limiter allows (--rate-per-key, under the
           key's quota), non-streaming, a few workers
  backend  an application backend serving many end users through one key: users
           arrive at --rate-per-key (Poisson), up to --concurrency in flight, the
           app's fixed system prompt + a short history, moderate outputs, mostly
           streamed to the users' browsers (openai SDK, one pooled client)
  ci       a CI job running an evaluation suite: --start-after seconds of idle (the
           nightly schedule), then --suite-size fixed prompts (the same every run:
           the suite is seeded by its name, not by --seed) at the limiter's rate,
           temperature 0, short answers, then idle
  agent    agent loops, one per key: a task is a run of turns whose context grows
           (the previous answer and a tool result are appended each turn), short to
           medium outputs, tool time 2-20 s in the world (0.2-2 s at --time-scale 10)

Each kind is bounded like every actor (--duration, --max-requests, SIGTERM) and
paces every key with a client-side limiter (Limiter) so a key never exceeds
--rate-per-key requests a minute: a benign job configured under its quota
never sees a 429.  Rates are lab time; waits taken from the world (the CI
schedule, the agents' tool time) are divided by --time-scale.
"""

from __future__ import annotations

import math
import random
import threading
import time

from . import text
from .kinds import Ctx, backoff_429, chat_call, do_request, lognormal

AGENT_CONTEXT_WORDS = 6000  # an agent's context window (then it starts a new task)


class Limiter:
    """Request starts of one key spaced at least 60/rpm seconds apart (a client-side
    quota guard, as batch tools and SDK rate limiters do)."""

    def __init__(self, rpm: float):
        self.gap = 60.0 / rpm
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self, ctx: Ctx) -> bool:
        with self.lock:
            t = max(time.monotonic(), self.next)
            self.next = t + self.gap
        return ctx.rt.sleep_until(t)


def _request(ctx: Ctx, sess, lim: Limiter, call, chars: int, ki: int, ip, rng: random.Random,
             tries: int = 3, **labels):
    """One logical request with the job's retry policy (limiter before every attempt).
    None if the actor is stopping."""
    res = None
    for attempt in range(tries):
        if not lim.wait(ctx):
            return None
        res = do_request(ctx, sess, call, ki, ip, chars, attempt=attempt, **labels)
        if res is None or res.ok:
            return res
        if res.status == 429:
            if not backoff_429(ctx, res, 2.0, 30.0):
                return None
        elif res.status is None or res.status >= 500:
            if not ctx.rt.sleep(0.5 * (2 ** attempt) * (0.5 + rng.random())):
                return None
        else:
            return res
    return res


def _ip(ctx: Ctx, i: int):
    return ctx.ips[i % len(ctx.ips)] if ctx.ips else None


# --------------------------------------------------------------------------
# batch: long documents in, short summaries out, one key, flat out under the quota
# --------------------------------------------------------------------------


def run_batch(ctx: Ctx) -> None:
    a = ctx.args
    lim = Limiter(a.rate_per_key)
    counter = iter(range(1, 10**9))
    lock = threading.Lock()

    def worker(w: int):
        rng = ctx.child_rng()
        ip = _ip(ctx, w)
        sess = ctx.session(0, ip, pool=2)
        try:
            while not ctx.rt.stopping():
                with lock:
                    doc = next(counter)
                words = int(lognormal(rng, 2500, 0.5, 800, 6000))
                msgs = [{"role": "system", "content": "Summarise the document in at most three short "
                                                      "bullet points. No preamble."},
                        {"role": "user", "content": f"Document {doc}:\n\n{text.prose(rng, words)}"}]
                stream = rng.random() < a.stream_prob
                call, chars = chat_call(ctx.model, msgs, rng.randint(a.min_tokens, a.max_tokens), stream,
                                        temperature=0.2)
                if _request(ctx, sess, lim, call, chars, 0, ip, rng, doc=doc, worker=w) is None:
                    return
        finally:
            sess.close()

    for w in range(a.concurrency):
        ctx.rt.spawn(worker, w, name=f"batch-worker-{w}")


# --------------------------------------------------------------------------
# backend: many end users through one key
# --------------------------------------------------------------------------


def run_backend(ctx: Ctx) -> None:
    a = ctx.args
    rt = ctx.rt
    lim = Limiter(min(110.0, 1.5 * a.rate_per_key))
    rng = ctx.child_rng()
    ip = _ip(ctx, 0)
    sess = ctx.session(0, ip, pool=a.concurrency)
    slots = threading.Semaphore(a.concurrency)
    app_rng = random.Random("backend-system-prompt")
    system = ("You are the assistant of a travel-booking site. Be brief and friendly. "
              + text.prose(app_rng, 250))  # the app's fixed instructions, the same for every user

    def user(n: int, urng: random.Random):
        try:
            msgs = [{"role": "system", "content": system}]
            for _ in range(urng.choice((0, 0, 1, 2, 3))):  # the user's earlier turns in this chat
                msgs.append({"role": "user", "content": text.prose(urng, urng.randint(8, 60))})
                msgs.append({"role": "assistant", "content": text.prose(urng, urng.randint(40, 200))})
            msgs.append({"role": "user", "content": text.prose(urng, urng.randint(8, 80))})
            out = int(lognormal(urng, 300, 0.5, a.min_tokens, a.max_tokens))
            call, chars = chat_call(ctx.model, msgs, out, urng.random() < a.stream_prob, temperature=0.7)
            _request(ctx, sess, lim, call, chars, 0, ip, urng, tries=2, user=n)
        finally:
            slots.release()

    def dispatcher():
        mean = 60.0 / a.rate_per_key
        t = time.monotonic()
        for n in range(1, 10**9):
            t += rng.expovariate(1.0 / mean)
            if not rt.sleep_until(t):
                return
            if not slots.acquire(blocking=False):
                rt.note("users_turned_away")  # every worker busy: the app answers "try again"
                continue
            rt.spawn(user, n, ctx.child_rng(), name="backend-user")

    rt.spawn(dispatcher, name="backend-dispatcher")


# --------------------------------------------------------------------------
# ci: an evaluation suite, nightly: idle, a burst of fixed prompts, idle
# --------------------------------------------------------------------------


def suite(size: int) -> list[tuple[str, int]]:
    """The evaluation suite: (prompt, max_tokens), the same in every run."""
    rng = random.Random("siphon-lab-eval-suite-v1")
    out = []
    for i in range(size):
        kind = rng.random()
        if kind < 0.5:  # multiple choice: a letter
            q = text.prose(rng, rng.randint(30, 120))
            opts = "\n".join(f"{c}) {text.sentence(rng)}" for c in "ABCD")
            out.append((f"Question {i}. {q}\n{opts}\nAnswer with the letter only.", 4))
        elif kind < 0.8:  # short answer
            out.append((f"Question {i}. {text.prose(rng, rng.randint(20, 80))}\nAnswer in one sentence.", 48))
        else:  # code generation
            _, code = text.code_context(rng, rng.randint(60, 200))
            out.append((f"Task {i}. Complete the function.\n\n{code}", 256))
    return out


def run_ci(ctx: Ctx) -> None:
    a = ctx.args
    rt = ctx.rt
    lim = Limiter(a.rate_per_key)
    items = suite(a.suite_size)
    nxt = iter(range(len(items)))
    lock = threading.Lock()
    start = time.monotonic() + a.start_after / ctx.scale

    def worker(w: int):
        rng = ctx.child_rng()
        ip = _ip(ctx, w)
        if not rt.sleep_until(start):
            return
        sess = ctx.session(0, ip, pool=2)
        try:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return  # suite done: idle until the next night
                prompt, max_tokens = items[i]
                msgs = [{"role": "user", "content": prompt}]
                call, chars = chat_call(ctx.model, msgs, max_tokens, False, temperature=0)
                if _request(ctx, sess, lim, call, chars, 0, ip, rng, item=i, worker=w) is None:
                    return
        finally:
            sess.close()

    for w in range(a.concurrency):
        rt.spawn(worker, w, name=f"ci-worker-{w}")


# --------------------------------------------------------------------------
# agent: tool-using loops with growing context
# --------------------------------------------------------------------------


def run_agent(ctx: Ctx) -> None:
    a = ctx.args
    for ki in range(len(ctx.keys)):
        ctx.rt.spawn(_agent_loop, ctx, ki, Limiter(a.rate_per_key), ctx.child_rng(), name=f"agent-{ki}")


def _agent_loop(ctx: Ctx, ki: int, lim: Limiter, rng: random.Random) -> None:
    a = ctx.args
    rt = ctx.rt
    ip = _ip(ctx, ki)
    sess = ctx.session(ki, ip, pool=2)
    try:
        for task in range(1, 10**6):
            goal = text.human_message(rng, rng.randint(20, 80), rng.choice(text.TOPICS), 0)
            msgs = [{"role": "system", "content": "You are a coding agent. Think step by step, call one "
                                                  "tool per turn, and say DONE when the task is complete."},
                    {"role": "user", "content": goal}]
            for turn in range(rng.randint(6, 30)):
                if text.word_count(" ".join(m["content"] for m in msgs)) > AGENT_CONTEXT_WORDS:
                    break  # context window full: the agent starts over
                out = int(lognormal(rng, 180, 0.7, a.min_tokens, a.max_tokens))
                call, chars = chat_call(ctx.model, msgs, out, rng.random() < a.stream_prob,
                                        want_text=True, temperature=0.2)
                res = _request(ctx, sess, lim, call, chars, ki, ip, rng, tries=2, task=task, turn=turn)
                if res is None:
                    return
                if not res.ok:
                    break  # the agent gives up on this task
                # the tool runs (tests, a search, a file read): 2-20 s in the world
                tool = math.exp(rng.uniform(math.log(2.0), math.log(20.0)))
                if not rt.sleep(tool / ctx.scale):
                    return
                _, result = text.code_context(rng, rng.randint(40, 400))
                msgs += [{"role": "assistant", "content": res.text or ""},
                         {"role": "user", "content": f"Tool result:\n{result}"}]
    finally:
        sess.close()


RUNNERS = {
    "batch": run_batch,
    "backend": run_backend,
    "ci": run_ci,
    "agent": run_agent,
}
