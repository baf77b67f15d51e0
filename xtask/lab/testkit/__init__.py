"""Helpers of the lab's Python self-tests (not tests themselves).

Modules:
    server_client  -- an inference_server.py subprocess, a raw HTTP/1.1 client that counts
                      bytes, request builders, the exact-accounting assertion, a counting proxy
    actor_harness  -- an inference server for actors, running one actor, traces, a throw-away CA,
                      the checks every actor log must pass
    proxies        -- in-process TLS terminator and SOCKS5 proxy, loopback only
"""
