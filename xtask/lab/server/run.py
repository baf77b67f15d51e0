"""The server process: listening sockets (one per --listen), the ready file, SIGTERM/SIGINT,
and the graceful shutdown that lets requests in flight finish and closes idle connections."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback

from .config import parse_args
from .handler import Handler
from .state import State

SERVE_POLL_SECONDS = 0.2
SIGNAL_POLL_SECONDS = 0.5
SHUTDOWN_POLL_SECONDS = 0.05


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 512
    block_on_close = False

    def __init__(self, addr, family, state: State):
        self.address_family = family
        self.state = state
        super().__init__(addr, Handler, bind_and_activate=False)
        try:
            if family == socket.AF_INET6:
                host = addr[0]
                # '::' also takes IPv4 (dual stack); any other IPv6 address only itself.
                v6only = 0 if host in ("::", "") else 1
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise

    def handle_error(self, request, client_address):  # stderr only
        print(f"inference_server: error on connection from {client_address}:", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)


def resolve(host: str, port: int) -> tuple[int, tuple]:
    """(address family, socket address) to bind for a --listen value."""
    if host in ("", "0.0.0.0"):
        return socket.AF_INET, ("0.0.0.0", port)
    if host == "::":
        return socket.AF_INET6, ("::", port, 0, 0)
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    infos = socket.getaddrinfo(h, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    fam, _, _, _, sa = infos[0]
    return fam, sa


def open_servers(args: argparse.Namespace, state: State) -> tuple[list[Server], int]:
    """One server per --listen address, all on one port: with --port 0 the first one picks it."""
    servers: list[Server] = []
    port = args.port
    try:
        for host in args.listen:
            fam, sa = resolve(host, port)
            srv = Server(sa, fam, state)
            servers.append(srv)
            if port == 0:
                port = srv.server_address[1]
    except OSError:
        for s in servers:
            s.server_close()
        raise
    return servers, port


def write_ready_file(path: str, port: int, servers: list[Server]) -> None:
    """Written once every socket listens, atomically: whoever waits for it can connect."""
    info = {
        "pid": os.getpid(),
        "port": port,
        "listen": [{"host": s.server_address[0], "port": s.server_address[1]} for s in servers],
    }
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(info, fh)
    os.replace(tmp, path)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT. Installed before the ready file appears, so a
    signal sent as soon as it does still stops the server gracefully."""
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def shut_down(state: State, servers: list[Server]) -> None:
    """Stop accepting; let requests in flight finish for at most --shutdown-grace (their
    answers say "Connection: close"); wake connections idle between requests so they close."""
    state.stopping.set()
    for s in servers:
        s.shutdown()
        s.server_close()
    deadline = time.monotonic() + max(0.0, state.args.shutdown_grace)
    while time.monotonic() < deadline:
        with state.conn_lock:
            handlers = list(state.conns.values())
        if not handlers:
            break
        for h in handlers:
            if h.idle:  # blocked waiting for a next request: wake it up
                try:
                    h.sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
        time.sleep(SHUTDOWN_POLL_SECONDS)
    state.log.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    state = State(args)
    try:
        servers, port = open_servers(args, state)
    except OSError as e:
        print(f"inference_server: cannot listen: {e}", file=sys.stderr)
        state.log.close()
        return 2

    stop = stop_on_signals()
    for s in servers:
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": SERVE_POLL_SECONDS}, daemon=True).start()
    if args.ready_file:
        write_ready_file(args.ready_file, port, servers)

    while not stop.wait(SIGNAL_POLL_SECONDS):
        pass
    shut_down(state, servers)
    return 0
