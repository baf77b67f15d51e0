"""The ground-truth request log: one JSON line per request (and one per connection for bytes
that never became a request), with the exact bytes read and written (see inference_server.py)."""

from __future__ import annotations

from dataclasses import dataclass

from jsonlines import JsonLines


class RequestLog(JsonLines):
    """The ground-truth request log (see jsonlines.py)."""


@dataclass(frozen=True)
class ConnectionIds:
    """What identifies a connection in every entry it gets."""

    conn_id: int
    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int


def entry(conn: ConnectionIds, seq: int, times: dict, status, request_bytes: int, response_bytes: int,
          fields: dict) -> dict:
    """One log line. `times` holds ts_start, ts_first_byte and ts_end; `fields` what the request
    filled in (method, path, key_id, model, tokens, error...), the rest keeps its default. The
    key order is the log's format."""
    e = {
        "ts_start": times.get("ts_start"),
        "ts_first_byte": times.get("ts_first_byte"),
        "ts_end": times.get("ts_end"),
        "conn_id": conn.conn_id,
        "seq": seq,
        "peer_ip": conn.peer_ip,
        "peer_port": conn.peer_port,
        "local_ip": conn.local_ip,
        "local_port": conn.local_port,
        "method": None,
        "path": None,
        "http_version": None,
        "status": status,
        "request_bytes": request_bytes,
        "response_bytes": response_bytes,
        "stream": False,
        "output_tokens": 0,
        "prompt_tokens": 0,
        "key_id": None,
        "model": None,
        "finish_reason": None,
        "request_id": None,
        "user_agent": None,
        "x_forwarded_for": None,
        "error": None,
    }
    e.update(fields)
    return e
