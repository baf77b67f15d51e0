"""The lab's inference server (library part of xtask/lab/inference_server.py).

Modules:
    config       -- the command-line flags
    connio       -- socket reader and writer that count every byte (the log's exactness)
    http1        -- HTTP/1.x request parsing: request line, headers, body, chunked framing
    respond      -- response heads and whole responses; the status the log records
    textgen      -- fake tokens from a fixed vocabulary, output lengths, prompt token counts
    state        -- what all connections share: keys, rate limit buckets, RNG, log, open connections
    routes       -- routing, API keys, per-key rate limit, /health and /v1/models
    completions  -- /v1/chat/completions and /v1/completions: validation, non-streamed answers
    sse          -- streamed answers: Server-Sent Events, one per token, paced
    requestlog   -- the ground-truth log and the fields of one entry
    handler      -- one connection: its request loop, one request in named steps, lingering close
    run          -- listening sockets, the ready file, signals and the graceful shutdown (main)
"""
