"""Append-only JSON-lines log shared by the lab's programs (server request log, actor logs):
one object per line, flushed per line so a reader (a test, the lab's live view) sees each
entry as soon as it is written; fsynced on close. Thread-safe."""

from __future__ import annotations

import json
import os
import threading


class JsonLines:
    def __init__(self, path: str | None):
        """Appends to `path`, creating its directory; with None every write is dropped."""
        self.lock = threading.Lock()
        self.fh = None
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.fh = open(path, "a", encoding="utf-8")

    def write(self, obj: dict) -> None:
        if self.fh is None:
            return
        line = json.dumps(obj, separators=(",", ":")) + "\n"
        with self.lock:
            if self.fh is None:
                return
            self.fh.write(line)
            self.fh.flush()

    def close(self) -> None:
        with self.lock:
            if self.fh is not None:
                self.fh.flush()
                try:
                    os.fsync(self.fh.fileno())
                except OSError:
                    pass
                self.fh.close()
                self.fh = None
