"""The body deadlines' watcher: a late body's reading side is shut, one read in time is left
alone, and a short deadline asked after long ones is still kept."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from milkprice.predict.deadlines import Watcher

WAIT = 5.0  # far longer than any deadline here: a test fails by its assertion, not a hang
Pairs = list[tuple[socket.socket, socket.socket]]  # every pair a test made, closed after it


@pytest.fixture
def pairs() -> Iterator[Pairs]:
    made: Pairs = []
    yield made
    for a, b in made:
        a.close()
        b.close()


def _pair(made: Pairs) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    made.append((a, b))
    return a, b


def _shut(sock: socket.socket) -> bool:
    """Whether a receive on ``sock`` ends with nothing (its reading side shut) within WAIT."""
    sock.settimeout(WAIT)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def test_a_late_body_is_shut_and_said_to_be_late(pairs: Pairs) -> None:
    watcher = Watcher()
    server, _client = _pair(pairs)
    entry = watcher.watch(server, 0.1)
    assert _shut(server)  # the blocked receive is woken
    assert watcher.finish(entry) is True


def test_a_body_read_in_time_is_left_alone(pairs: Pairs) -> None:
    watcher = Watcher()
    server, client = _pair(pairs)
    entry = watcher.watch(server, 0.2)
    assert watcher.finish(entry) is False
    time.sleep(0.4)  # past its deadline: nothing happens to it any more
    client.sendall(b"x")
    server.settimeout(WAIT)
    assert server.recv(1) == b"x"


def test_a_short_deadline_after_long_ones_is_kept(pairs: Pairs) -> None:
    watcher = Watcher()
    long_ones = [watcher.watch(_pair(pairs)[0], 60) for _ in range(3)]
    time.sleep(0.1)  # the thread now sleeps toward the long deadlines
    server, _client = _pair(pairs)
    started = time.monotonic()
    short = watcher.watch(server, 0.1)
    assert _shut(server)
    assert time.monotonic() - started < WAIT / 2
    assert watcher.finish(short) is True
    assert [watcher.finish(e) for e in long_ones] == [False, False, False]


def test_only_the_late_of_many_are_shut(pairs: Pairs) -> None:
    watcher = Watcher()
    late = [(s, watcher.watch(s, 0.1)) for s, _ in (_pair(pairs) for _ in range(4))]
    kept = [(s, c, watcher.watch(s, 60)) for s, c in (_pair(pairs) for _ in range(4))]
    assert all(_shut(s) for s, _ in late)
    assert all(watcher.finish(e) for _, e in late)
    for server, client, entry in kept:
        assert watcher.finish(entry) is False
        client.sendall(b"y")
        server.settimeout(WAIT)
        assert server.recv(1) == b"y"
