"""Azure LLM inference traces (TIMESTAMP,ContextTokens,GeneratedTokens).

The public traces (AzureLLMInferenceTrace_conv.csv / _code.csv) hold one row
per request of a whole production service (several requests per second).  One
actor stands for a small part of that population, so it *thins* the trace:
starting at a seeded random row, it keeps each row with probability
`fraction`.  Independent thinning keeps the shape of the arrival process
(bursts stay bursts, silent minutes stay silent), only the mean rate shrinks.
Arrival offsets are divided by time_scale (20 = twenty times faster).  The
trace is replayed cyclically if the actor outlives it.
"""

from __future__ import annotations

import calendar
import csv
import random
import time
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class Row:
    t: float  # seconds since the first row of the file
    ctx: int  # ContextTokens
    gen: int  # GeneratedTokens


def _parse_ts(s: str) -> float:
    s = s.strip()
    base, _, frac = s.partition(".")
    sec = calendar.timegm(time.strptime(base, "%Y-%m-%d %H:%M:%S"))
    return sec + (float("0." + frac) if frac else 0.0)


def load(path: str) -> list[Row]:
    rows: list[Row] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
        if not reader.fieldnames or not need.issubset(reader.fieldnames):
            raise ValueError(f"{path}: expected columns {sorted(need)}, got {reader.fieldnames}")
        raw = []
        for rec in reader:
            try:
                raw.append((_parse_ts(rec["TIMESTAMP"]), int(rec["ContextTokens"]), int(rec["GeneratedTokens"])))
            except (ValueError, TypeError):
                continue  # skip malformed lines
    if not raw:
        raise ValueError(f"{path}: no usable rows")
    raw.sort(key=lambda r: r[0])
    t0 = raw[0][0]
    for t, c, g in raw:
        rows.append(Row(t - t0, max(0, c), max(1, g)))
    return rows


class Cursor:
    """Cyclic walk over the rows from a seeded start, with trace time that
    keeps increasing across wrap-arounds."""

    def __init__(self, rows: list[Row], rng: random.Random):
        self.rows = rows
        self.i = rng.randrange(len(rows))
        span = rows[-1].t - rows[0].t
        gap = span / max(1, len(rows) - 1)
        self.period = span + gap
        self.wraps = 0

    def next(self) -> tuple[float, Row]:
        r = self.rows[self.i]
        t = r.t + self.wraps * self.period
        self.i += 1
        if self.i >= len(self.rows):
            self.i = 0
            self.wraps += 1
        return t, r

    def peek_rows(self, n: int) -> list[Row]:
        """The next n rows after the current position (without consuming)."""
        return [self.rows[(self.i + k) % len(self.rows)] for k in range(n)]


def arrivals(rows: list[Row], rng: random.Random, fraction: float,
             time_scale: float) -> Iterator[tuple[float, Row, list[Row]]]:
    """Yield (offset_s, row, following_rows) for every kept row.

    offset_s is scaled wall-clock seconds since the first kept row (so the
    first arrival is at 0).  following_rows are the 8 rows after the kept one
    in the trace; sessions use them for the sizes of their later turns.
    """
    cur = Cursor(rows, rng)
    fraction = min(1.0, max(1e-9, fraction))
    first: float | None = None
    # bounded: at most len(rows)*4 rows skipped between two kept rows
    max_skip = len(rows) * 4
    while True:
        skipped = 0
        while True:
            t, r = cur.next()
            if rng.random() < fraction:
                break
            skipped += 1
            if skipped > max_skip:
                return
        if first is None:
            first = t
        yield (t - first) / time_scale, r, cur.peek_rows(8)
