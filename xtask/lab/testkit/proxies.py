"""In-process stand-ins for the lab's network middlemen, loopback only: a TLS terminator
(haproxy's role) and a SOCKS5 proxy (relay2's)."""

from __future__ import annotations

import ipaddress
import select
import socket
import ssl
import struct
import threading


class TLSTerminator:
    """In-process TLS front (like the lab's haproxy) forwarding to a plain
    loopback port.  One thread per connection, select loop, bounded timeouts."""

    def __init__(self, cert: str, key: str, backend_port: int):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.backend_port = backend_port
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.handshakes = 0
        self.failed_handshakes = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    def _handle(self, c: socket.socket):
        c.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError):
            with self.lock:
                self.failed_handshakes += 1
            c.close()
            return
        with self.lock:
            self.handshakes += 1
        try:
            up = socket.create_connection(("127.0.0.1", self.backend_port), timeout=30)
        except OSError:
            tls.close()
            return
        try:
            while True:
                ready = [tls] if tls.pending() else select.select([tls, up], [], [], 30)[0]
                if not ready:
                    return
                for s in ready:
                    try:
                        data = s.recv(65536)
                    except ssl.SSLWantReadError:
                        continue
                    if not data:
                        return
                    (up if s is tls else tls).sendall(data)
        except (OSError, ssl.SSLError):
            return
        finally:
            for s in (tls, up):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.lsock.close()


class Socks5Proxy:
    """Minimal in-process SOCKS5 (no auth, CONNECT only) that connects only to
    loopback; records the requested (host, port) of every CONNECT."""

    def __init__(self):
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.connects: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    @staticmethod
    def _exact(s: socket.socket, n: int) -> bytes:
        b = b""
        while len(b) < n:
            d = s.recv(n - len(b))
            if not d:
                raise ConnectionError("eof")
            b += d
        return b

    def _handle(self, c: socket.socket):
        c.settimeout(30)
        up = None
        try:
            ver, nm = self._exact(c, 2)
            self._exact(c, nm)
            if ver != 5:
                return
            c.sendall(b"\x05\x00")
            ver, cmd, _, atyp = self._exact(c, 4)
            if atyp == 1:
                host = socket.inet_ntoa(self._exact(c, 4))
            elif atyp == 3:
                host = self._exact(c, self._exact(c, 1)[0]).decode()
            elif atyp == 4:
                host = socket.inet_ntop(socket.AF_INET6, self._exact(c, 16))
            else:
                return
            port = struct.unpack("!H", self._exact(c, 2))[0]
            with self.lock:
                self.connects.append((host, port))
            try:
                loop = host == "localhost" or ipaddress.ip_address(host).is_loopback
            except ValueError:
                loop = False
            if cmd != 1 or not loop:
                c.sendall(b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00")  # not allowed
                return
            up = socket.create_connection(("127.0.0.1", port), timeout=30)
            c.sendall(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")

            def pump(a, b):
                try:
                    while True:
                        d = a.recv(65536)
                        if not d:
                            break
                        b.sendall(d)
                except OSError:
                    pass
                try:
                    b.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

            t = threading.Thread(target=pump, args=(up, c), daemon=True)
            t.start()
            pump(c, up)
            t.join(30)
        except (OSError, ValueError, ConnectionError):
            pass
        finally:
            for s in (c, up):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def close(self):
        self.lsock.close()
