"""HTTP/1.0 and 1.1 request parsing, through a ConnReader so that every byte of the request
(leading empty lines, request line, headers, body with chunk framing and trailers) is counted."""

from __future__ import annotations

from typing import Callable

from .connio import BadRequest, ConnReader

MAX_HEADERS = 100
# Empty lines tolerated before a request line (RFC 9112 2.2 asks servers to skip at least one).
MAX_LEADING_EMPTY_LINES = 8
MAX_CHUNK_SIZE_LINE = 1024


class Request:
    __slots__ = (
        "method", "target", "path", "version", "headers", "body",
        "ts_start", "keep_alive", "expect_continue",
    )

    def __init__(self, ts_start: float):
        # What a request that fails to parse is answered and logged with: no method, path or
        # version yet, no headers, and the connection is not kept.
        self.method = self.target = self.path = self.version = None
        self.headers: dict[str, str] = {}
        self.body: bytes | None = None
        self.keep_alive = False
        self.expect_continue = False
        self.ts_start = ts_start

    def header(self, name: str, default=None):
        return self.headers.get(name.lower(), default)


def _is_blank(line: bytes) -> bool:
    return line in (b"\r\n", b"\n")


def parse_head(reader: ConnReader, req: Request) -> None:
    """The request line and the headers, up to and including the blank line."""
    _parse_request_line(req, _request_line(reader))
    req.headers = _parse_headers(reader)
    _set_connection_flags(req)


def _request_line(reader: ConnReader) -> bytes:
    line = reader.readline()
    skipped = 0
    while _is_blank(line):
        skipped += 1
        if skipped > MAX_LEADING_EMPTY_LINES:
            raise BadRequest(400, "too many empty lines")
        line = reader.readline()
    return line


def _parse_request_line(req: Request, line: bytes) -> None:
    parts = line.decode("latin-1").rstrip("\r\n").split()
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if not version.startswith("HTTP/"):
        raise BadRequest(400, "malformed HTTP version")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(505, "unsupported HTTP version")
    req.method, req.target, req.version = method, target, version
    path = target
    if path.startswith("http://") or path.startswith("https://"):  # absolute form (proxies)
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    req.path = path.split("?", 1)[0]


def _parse_headers(reader: ConnReader) -> dict[str, str]:
    """Header names lower-cased; repeated headers joined with ", " (one Content-Length value
    only: two different ones would make the body's end ambiguous)."""
    headers: dict[str, str] = {}
    last = None
    for _ in range(MAX_HEADERS + 1):
        line = reader.readline()
        if _is_blank(line):
            return headers
        s = line.decode("latin-1").rstrip("\r\n")
        if s[:1] in (" ", "\t"):  # obsolete line folding: continues the previous header
            if last is None:
                raise BadRequest(400, "bad header continuation")
            headers[last] += " " + s.strip()
            continue
        name, sep, value = s.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "malformed header")
        name = name.lower()
        value = value.strip()
        if name in headers:
            if name == "content-length" and headers[name] != value:
                raise BadRequest(400, "conflicting content-length")
            headers[name] = headers[name] + ", " + value
        else:
            headers[name] = value
        last = name
    raise BadRequest(431, "too many headers")


def _set_connection_flags(req: Request) -> None:
    conn_tokens = {t.strip().lower() for t in req.headers.get("connection", "").split(",")}
    if req.version == "HTTP/1.1":
        req.keep_alive = "close" not in conn_tokens
    else:
        req.keep_alive = "keep-alive" in conn_tokens
    req.expect_continue = (
        req.version == "HTTP/1.1" and req.headers.get("expect", "").lower() == "100-continue"
    )


def read_body(reader: ConnReader, req: Request, limit: int, send_continue: Callable[[], None]) -> None:
    """The body, chunked or of Content-Length bytes (none without either). `send_continue`
    answers "Expect: 100-continue" just before the first body byte is needed."""
    te = req.headers.get("transfer-encoding")
    if te is not None:
        if te.lower().replace(" ", "") != "chunked":
            raise BadRequest(501, "unsupported transfer-encoding")
        if req.expect_continue:
            send_continue()
        req.body = _read_chunked(reader, limit)
        return
    cl = req.headers.get("content-length")
    if cl is None:
        req.body = b""
        return
    try:
        n = int(cl)
    except ValueError:
        raise BadRequest(400, "bad content-length")
    if n < 0:
        raise BadRequest(400, "bad content-length")
    if n > limit:
        raise BadRequest(413, "request body too large")
    if n > 0 and req.expect_continue:
        send_continue()
    req.body = reader.read_exact(n)


def _read_chunked(reader: ConnReader, limit: int) -> bytes:
    body = bytearray()
    while True:
        size = _chunk_size(reader)
        if size == 0:
            _skip_trailers(reader)
            return bytes(body)
        if len(body) + size > limit:
            raise BadRequest(413, "request body too large")
        body += reader.read_exact(size)
        _chunk_terminator(reader)


def _chunk_size(reader: ConnReader) -> int:
    size_line = reader.readline(MAX_CHUNK_SIZE_LINE).decode("latin-1").strip()
    size_s = size_line.split(";", 1)[0].strip()  # chunk extensions are ignored
    try:
        size = int(size_s, 16)
    except ValueError:
        raise BadRequest(400, "bad chunk size")
    if size < 0:
        raise BadRequest(400, "bad chunk size")
    return size


def _skip_trailers(reader: ConnReader) -> None:
    """Trailer fields after the last chunk, up to the blank line (read and counted, not used)."""
    for _ in range(MAX_HEADERS + 1):
        if _is_blank(reader.readline()):
            return
    raise BadRequest(431, "too many trailers")


def _chunk_terminator(reader: ConnReader) -> None:
    """The CRLF (or a bare LF) after a chunk's data."""
    c = reader.read_exact(1)
    if c == b"\r":
        c = reader.read_exact(1)
    if c != b"\n":
        raise BadRequest(400, "bad chunk terminator")
