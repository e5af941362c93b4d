"""Deadlines for reading request bodies: the whole body, not each pause, must arrive in time.

A socket's timeout bounds each receive, and the server reads a body in a loop of receives
until it has as many bytes as asked for: a client sending a byte every second, under the
timeout, would hold a thread for as long as it cares to. So one thread for the process
watches the bodies being read: at a body's deadline it shuts the reading side of its
connection, the receive blocked in the server returns at once, and the reader answers 408.
The answer can still be written (only reading is shut); the connection then closes.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from typing import Any

GRAIN = 0.05  # the watcher wakes at most this often: a deadline is kept to within it


class Watch:
    """One body being read: ``finish`` says whether its deadline passed first."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.done = False
        self.expired = False


class Watcher:
    """The process's one watching thread, started on first use (never at import or fork)."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, sock: Any, seconds: float) -> Watch:
        """Start watching ``sock``: its reading side is shut ``seconds`` from now, unless
        ``finish`` comes first."""
        entry = Watch(sock)
        with self._changed:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="body-deadlines")
                self._thread.daemon = True
                self._thread.start()
            heapq.heappush(self._due, (time.monotonic() + seconds, next(self._order), entry))
            if self._due[0][2] is entry:
                self._changed.notify()
        return entry

    def finish(self, entry: Watch) -> bool:
        """Stop watching; True if the deadline had passed (the connection is shut)."""
        with self._changed:
            entry.done = True
            return entry.expired

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due:
                    self._changed.wait()
                now = time.monotonic()
                if self._due[0][0] > now:
                    self._changed.wait(max(GRAIN, self._due[0][0] - now))
                    continue
                _, _, entry = heapq.heappop(self._due)
                if entry.done:
                    continue
                entry.expired = True
            with contextlib.suppress(OSError):  # closed meanwhile: nothing left to give up
                entry.sock.shutdown(socket.SHUT_RD)


_watcher = Watcher()


def watch(sock: Any, seconds: float) -> Watch:
    return _watcher.watch(sock, seconds)


def finish(entry: Watch) -> bool:
    return _watcher.finish(entry)
