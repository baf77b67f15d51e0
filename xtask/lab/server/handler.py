"""One connection: wait for a request, read it, answer it, log it, until either side closes;
then a lingering close, and an entry for any bytes that never became a request. Keeps the
log's per-connection invariant: the entries' request_bytes add up to every byte read."""

from __future__ import annotations

import socket
import socketserver
import sys
import time
from typing import TYPE_CHECKING

from . import requestlog, routes
from .connio import BadRequest, ConnReader, ConnWriter, PeerClosed
from .http1 import Request, parse_head, read_body
from .requestlog import ConnectionIds
from .respond import Responder, error_body
from .state import State

if TYPE_CHECKING:
    from .run import Server

# After our FIN, what the peer still sends is read (and logged) up to this many bytes.
LINGER_MAX_BYTES = 1 << 20


def norm_ip(ip: str) -> str:
    """IPv4-mapped addresses (dual-stack sockets) as plain IPv4; no zone on link-local ones."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip.split("%", 1)[0] if ip.startswith("fe80") else ip


class Handler(socketserver.BaseRequestHandler):
    server: Server

    def setup(self) -> None:
        self.state: State = self.server.state
        self.sock: socket.socket = self.request
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.sock.settimeout(self.state.args.idle_timeout)
        self.reader = ConnReader(self.sock)
        self.writer = ConnWriter(self.sock)
        self.respond = Responder(self.writer)
        peer = self.client_address
        local = self.sock.getsockname()
        self.conn = ConnectionIds(self.state.next_conn_id(), norm_ip(peer[0]), peer[1],
                                  norm_ip(local[0]), local[1])
        self.seq = 0
        # True while blocked waiting for the next request: the shutdown wakes only those.
        self.idle = False
        with self.state.conn_lock:
            self.state.conns[self.conn.conn_id] = self

    def finish(self) -> None:
        with self.state.conn_lock:
            self.state.conns.pop(self.conn.conn_id, None)

    # -- the connection --------------------------------------------------------

    def handle(self) -> None:
        while True:
            ts_start = self._wait_for_request()
            if ts_start is None:
                break  # EOF / timeout between requests, or shutting down
            if not self._one_request(ts_start):
                break
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._linger()
        self._log_leftover()

    def _wait_for_request(self) -> float | None:
        """The arrival time of the next request's first byte; None on EOF, idle timeout, or
        when the server is stopping and no request has started arriving."""
        self.idle = self.reader.available() == 0
        if self.idle and self.state.stopping.is_set():
            self.idle = False
            return None
        try:
            return self.reader.wait_first_byte()
        except OSError:  # includes idle timeout: nothing consumed
            return None
        finally:
            self.idle = False

    def _linger(self) -> None:
        """Lingering close: after our FIN, read (and account for) what the
        peer still sends until its EOF, bounded in time and size, so the
        kernel does not answer unread data with a RST that could destroy the
        response we just sent."""
        if self.reader.eof:
            return
        deadline = time.monotonic() + self.state.args.linger_seconds
        limit = self.reader.received + LINGER_MAX_BYTES
        while self.reader.received < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                self.sock.settimeout(left)
                if not self.reader.fill():
                    break
            except OSError:
                break

    def _log_leftover(self) -> None:
        """Bytes received on this connection that never became part of a
        logged request (e.g. sent after a request we answered with close)."""
        left = self.reader.available()
        if left > 0:
            self.reader.consume_all_buffered()
            self._write_entry(
                {"ts_start": None, "ts_first_byte": None, "ts_end": time.time()},
                left, self.writer.total, None,
                {"error": "unparsed bytes received before connection close"},
            )

    # -- one request -----------------------------------------------------------

    def _one_request(self, ts_start: float) -> bool:
        """Parse and answer one request. Return True to keep the connection."""
        req_start = self.reader.consumed
        resp_start = self.writer.total
        self.writer.first_ts = None
        self.respond.status = None
        req = Request(ts_start)
        fields: dict = {}
        try:
            self._read_request(req, fields)
        except (BadRequest, PeerClosed, OSError) as e:
            status = self._answer_unreadable(req, e, fields)
            self._log_request(req, req_start, resp_start, status, fields)
            return False

        if self.state.stopping.is_set():
            req.keep_alive = False  # the last answer on this connection, and it says so (Connection: close)
        try:
            status = routes.dispatch(self.state, self.respond, req, fields, self.conn.peer_ip)
        except OSError as e:  # client went away / send timeout
            fields["error"] = f"write failed: {e.__class__.__name__}: {e}"
            self._log_request(req, req_start, resp_start, self.respond.status, fields)
            return False
        except Exception as e:  # a bug: answer 500 if nothing was sent yet
            self._answer_internal_error(req, e, fields, resp_start)
            self._log_request(req, req_start, resp_start, self.respond.status, fields)
            return False
        self._log_request(req, req_start, resp_start, status, fields)
        return req.keep_alive

    def _read_request(self, req: Request, fields: dict) -> None:
        parse_head(self.reader, req)
        fields.update(self._head_fields(req))
        read_body(self.reader, req, self.state.args.max_body_bytes, self.respond.send_continue)

    @staticmethod
    def _head_fields(req: Request) -> dict:
        return {
            "method": req.method,
            "path": req.path,
            "http_version": req.version,
            "user_agent": req.header("user-agent"),
            "x_forwarded_for": req.header("x-forwarded-for"),
        }

    def _answer_unreadable(self, req: Request, e: Exception, fields: dict) -> int | None:
        """A request that could not be read: answer it if there is a status for it, and return
        that status (None when the peer is gone). The connection is closed after this."""
        # Everything already received belongs to this (broken) request.
        self.reader.consume_all_buffered()
        status = None
        if isinstance(e, BadRequest):
            status, msg = e.status, e.message
        elif isinstance(e, PeerClosed):
            msg = "peer closed mid-request"
        elif isinstance(e, TimeoutError):
            status, msg = 408, "timeout mid-request"
        else:
            msg = f"read error: {e}"
        fields["error"] = msg
        if status is not None:
            try:
                self.respond.send(req, status, error_body(msg, "invalid_request_error"), close=True)
            except OSError as oe:
                fields["error"] = f"{msg}; write failed: {oe}"
        return status

    def _answer_internal_error(self, req: Request, e: Exception, fields: dict, resp_start: int) -> None:
        print(f"inference_server: internal error: {e!r}", file=sys.stderr)
        fields["error"] = f"internal error: {e!r}"
        if self.writer.total == resp_start:
            try:
                self.respond.send(req, 500, error_body("internal error", "server_error"), close=True)
            except OSError:
                pass

    # -- the log ---------------------------------------------------------------

    def _log_request(self, req: Request, req_start: int, resp_start: int, status, fields: dict) -> None:
        w = self.writer
        sent_any = w.total > resp_start
        times = {
            "ts_start": req.ts_start,
            "ts_first_byte": w.first_ts if sent_any else None,
            "ts_end": w.last_ts if sent_any else time.time(),
        }
        self._write_entry(times, self.reader.consumed - req_start, resp_start, status, fields)

    def _write_entry(self, times: dict, req_bytes: int, resp_start: int, status, fields: dict) -> None:
        resp_bytes = self.writer.total - resp_start
        self.state.log.write(requestlog.entry(self.conn, self.seq, times, status, req_bytes, resp_bytes, fields))
        self.seq += 1
