#!/usr/bin/env python3
"""Siphon lab: a small, real OpenAI-compatible HTTP/1.1 inference server.

Stdlib only (Python >= 3.11). It produces fake tokens from a fixed vocabulary
(no model) and writes a ground-truth JSON-lines request log whose byte counts
are exact, so that end-to-end tests of the network monitor can compare what the
monitor saw on the wire with what really crossed the socket.

Endpoints:
    POST /v1/chat/completions     (stream and non-stream)
    POST /v1/completions          (stream and non-stream)
    GET  /v1/models
    GET  /v1/models/<id>
    GET  /health                  (never needs a key, never rate limited)
HEAD is accepted wherever GET is.

Exactness of the log:
  * Reading: every connection has its own buffered reader (ConnReader) on top
    of socket.recv().  The HTTP parser only consumes bytes through it, and the
    reader keeps an absolute "consumed" offset.  request_bytes is the
    difference of that offset between the start and the end of the parse of
    one request (leading empty lines, request line, headers, blank line, body
    with chunk framing and trailers if the body was chunked).  Bytes that
    recv() read ahead (pipelining) stay in the buffer and count towards the
    next request.  When a request fails to parse (400/413/431, peer closed or
    timed out mid-request) the connection is closed and everything received
    so far is counted in that request's entry.  Bytes that arrive after we
    decided to close (read during a bounded "lingering close", --linger-seconds)
    get one extra entry per connection: status null, "error" set.  So, per
    connection, the sum of request_bytes equals every byte the server read.
  * Writing: every byte goes through ConnWriter, which loops over
    socket.send() and adds up what send() returned, so response_bytes is the
    number of bytes the kernel accepted for this response (status line,
    headers, body, chunk framing, and any "100 Continue" interim response sent
    for this request), even if the client disconnects part way through.
  * ts_start is the time the recv() that returned the first byte of the
    request head completed (for a pipelined request that is the time the chunk
    containing it arrived, which can be before the previous response was sent).
    ts_first_byte is the time the first send() of the response returned, ts_end
    the time the last one returned.

The code is in server/ (its __init__.py lists the modules); this file is the
entry point the lab (xtask/src/lab/mod.rs) and agent/tests/e2e_http.rs run.
"""

import sys

from server.run import main

if __name__ == "__main__":
    sys.exit(main())
