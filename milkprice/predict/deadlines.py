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
import socket
import threading
import time
from typing import Any

GRAIN = 0.05  # the watcher wakes at most this often: a deadline is kept to within it


class Watch:
    """One body being read: ``finish`` says whether its deadline passed first."""

    __slots__ = ("due", "expired", "sock")

    def __init__(self, sock: Any, due: float) -> None:
        self.sock = sock
        self.due = due
        self.expired = False


class Watcher:
    """The process's one watching thread, started on first use (never at import or fork).

    Only the bodies being read now are held (a few: one per thread serving), and a body read
    in time costs a lock and a set's add and remove, nothing for the thread: it sleeps until
    the earliest deadline held, or, with none, for the shortest timeout ever asked, so that a
    body arriving while it sleeps is never due before it wakes. Only a body asking a shorter
    timeout than any before wakes it early.
    """

    def __init__(self) -> None:
        self._reading: set[Watch] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wakes = float("inf")  # when the thread wakes next
        self._shortest = float("inf")  # the shortest timeout asked so far

    def watch(self, sock: Any, seconds: float) -> Watch:
        """Start watching ``sock``: its reading side is shut ``seconds`` from now, unless
        ``finish`` comes first."""
        entry = Watch(sock, time.monotonic() + seconds)
        with self._changed:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="body-deadlines")
                self._thread.daemon = True
                self._thread.start()
            self._reading.add(entry)
            self._shortest = min(self._shortest, seconds)
            if entry.due < self._wakes:
                self._changed.notify()
        return entry

    def finish(self, entry: Watch) -> bool:
        """Stop watching; True if the deadline had passed (the connection is shut)."""
        with self._changed:
            self._reading.discard(entry)
            return entry.expired

    def _run(self) -> None:
        while True:
            with self._changed:
                now = time.monotonic()
                late = [entry for entry in self._reading if entry.due <= now]
                for entry in late:
                    entry.expired = True
                    self._reading.discard(entry)
                due = min((e.due for e in self._reading), default=now + self._shortest)
                self._wakes = max(due, now + GRAIN)
                if not late:
                    self._changed.wait(self._wakes - now)
            for entry in late:
                with contextlib.suppress(OSError):  # closed meanwhile: nothing left to give up
                    entry.sock.shutdown(socket.SHUT_RD)


_watcher = Watcher()


def watch(sock: Any, seconds: float) -> Watch:
    return _watcher.watch(sock, seconds)


def finish(entry: Watch) -> bool:
    return _watcher.finish(entry)
