"""Connection I/O with exact accounting: the HTTP parser reads only through ConnReader and
every response byte goes through ConnWriter, so each log entry's byte counts are what really
crossed the socket (see inference_server.py)."""

from __future__ import annotations

import collections
import socket
import time

MAX_LINE = 65536


class PeerClosed(Exception):
    """The peer closed the connection (EOF) while we needed more bytes."""


class BadRequest(Exception):
    """A request we answer with `status` and then close the connection on."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ConnReader:
    """Buffered reader over a socket that knows exactly what was consumed."""

    def __init__(self, sock: socket.socket, bufsize: int = 65536):
        self.sock = sock
        self.bufsize = bufsize
        self.buf = bytearray()
        self.pos = 0  # index of the first unconsumed byte in buf
        self.consumed = 0  # absolute number of bytes consumed so far
        self.received = 0  # absolute number of bytes received so far
        self.eof = False
        # (absolute end offset, unix time) of every recv() chunk not yet
        # fully consumed
        self.chunks: collections.deque[tuple[int, float]] = collections.deque()

    def available(self) -> int:
        return len(self.buf) - self.pos

    def fill(self) -> bool:
        """One recv() into the buffer; False on EOF."""
        if self.eof:
            return False
        data = self.sock.recv(self.bufsize)
        now = time.time()
        if not data:
            self.eof = True
            return False
        if self.pos > 65536 and self.pos * 2 > len(self.buf):
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += data
        self.received += len(data)
        self.chunks.append((self.received, now))
        return True

    def wait_first_byte(self) -> float | None:
        """Block until one unconsumed byte exists; return the unix time its
        recv() chunk arrived, or None on EOF."""
        while self.available() == 0:
            if not self.fill():
                return None
        while self.chunks and self.chunks[0][0] <= self.consumed:
            self.chunks.popleft()
        return self.chunks[0][1] if self.chunks else time.time()

    def _consume(self, n: int) -> bytes:
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        self.consumed += n
        return out

    def readline(self, limit: int = MAX_LINE) -> bytes:
        """Return one line including b'\\n'. Raises BadRequest if longer than
        limit, PeerClosed on EOF before a full line."""
        scanned = 0  # bytes after pos already known to contain no b'\\n'
        while True:
            idx = self.buf.find(b"\n", self.pos + scanned)
            if idx >= 0:
                n = idx - self.pos + 1
                if n > limit:
                    raise BadRequest(431, "line too long")
                return self._consume(n)
            scanned = self.available()
            if scanned > limit:
                raise BadRequest(431, "line too long")
            if not self.fill():  # may compact buf: only relative offsets kept
                raise PeerClosed()

    def consume_all_buffered(self) -> int:
        """Mark every received-but-unconsumed byte as consumed."""
        n = self.available()
        self._consume(n)
        return n

    def read_exact(self, n: int) -> bytes:
        while self.available() < n:
            if not self.fill():
                raise PeerClosed()
        return self._consume(n)


class ConnWriter:
    """Writes to a socket, counting the bytes the kernel accepted."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.total = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.sock.send(view)
            now = time.time()
            if n <= 0:  # pragma: no cover - send() raises rather than 0
                raise ConnectionError("send returned 0")
            self.total += n
            if self.first_ts is None:
                self.first_ts = now
            self.last_ts = now
            view = view[n:]
