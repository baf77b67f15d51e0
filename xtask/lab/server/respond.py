"""Writing responses: the head every response shares, whole (Content-Length) responses, and
the status of the current response, which the log records even when a write fails part way."""

from __future__ import annotations

import email.utils
import json

from .connio import ConnWriter
from .http1 import Request

SERVER_NAME = "siphon-lab-inference/1.0"

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


def json_bytes(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def error_body(message: str, etype: str, code: str | None = None, param=None) -> bytes:
    """An error in OpenAI's shape, which the SDKs turn into their exception types."""
    return json_bytes({"error": {"message": message, "type": etype, "param": param, "code": code}})


def response_head(req: Request, status: int, headers: list[tuple[str, str]], close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
    lines.append(f"Server: {SERVER_NAME}")
    for k, v in headers:
        lines.append(f"{k}: {v}")
    if close:
        lines.append("Connection: close")
    elif req.version == "HTTP/1.0":
        lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Responder:
    """Sends the responses of one connection through its ConnWriter."""

    def __init__(self, writer: ConnWriter):
        self.writer = writer
        # Status of the response being sent on this connection (None before its head goes
        # out): what the log records when the client goes away mid-response.
        self.status: int | None = None

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def send_continue(self) -> None:
        self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def send(self, req: Request, status: int, body: bytes, close: bool = False,
             extra_headers: list[tuple[str, str]] | None = None,
             content_type: str = "application/json") -> int:
        """A whole response (head and body in one write; no body for HEAD); returns status."""
        if close:
            req.keep_alive = False
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if extra_headers:
            headers.extend(extra_headers)
        head = response_head(req, status, headers, close=not req.keep_alive)
        self.status = status
        self.writer.write(head if req.method == "HEAD" else head + body)
        return status

    def method_not_allowed(self, req: Request, allow: str) -> int:
        return self.send(req, 405, error_body(f"Method {req.method} not allowed", "invalid_request_error"),
                         extra_headers=[("Allow", allow)])
