"""Siphon lab traffic actors (library part of xtask/lab/actors.py).

Modules:
    text     -- diverse synthetic prompt text (chat, code, harvesting templates)
    trace    -- Azure LLM inference trace loading and thinned, scaled arrivals
    runtime  -- deadline/budget/signal handling, JSON-lines request log
    clients  -- the three HTTP clients (openai SDK, curl subprocess, requests)
    kinds    -- the actor behaviours (human, app, harvester, relay-user, far-client)
"""
