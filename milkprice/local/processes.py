"""Local processes: start a server in a process group of its own, wait for it, stop all of it.

A function server is a gunicorn master with workers; a worker busy in a request (a training)
outlives its master when only the master is signalled, and keeps the port. So every server is
started as the leader of a new session and stopped by signalling its whole process group: first
SIGTERM, then, after a grace period, SIGKILL to whatever of the group is left. A descendant
that made a group of its own (the Lambda Runtime Interface Emulator starts its runtime so) is
found through /proc before the first signal, and its group is stopped with its leader's. The
stack, the bench and the tests all start and stop servers through this module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

GRACE = 5.0  # seconds a group gets to stop on SIGTERM before SIGKILL
Output = int | IO[bytes] | None


@dataclass
class Process:
    """A child that leads its own process group (its pid is the group id)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path | None = field(default=None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start(
    name: str,
    args: list[str],
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    output: Output = subprocess.DEVNULL,
    log: Path | None = None,
) -> Process:
    """Start ``args`` as the leader of a new session: a terminal's Ctrl-C reaches only us.

    With ``log``, the output goes to that file (``output`` is then ignored).
    """
    handle = log.open("wb") if log is not None else None
    try:
        popen = subprocess.Popen(
            args,
            env=dict(env),
            cwd=cwd,
            stdout=handle if handle is not None else output,
            stderr=subprocess.STDOUT if (handle or output is not None) else None,
            start_new_session=True,
        )
    finally:
        if handle is not None:
            handle.close()  # the child has its own copy
    return Process(name, popen, log)


def _stat(pid: str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgid, ...)."""
    try:
        stat = (Path("/proc") / pid / "stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: fields start after the last ')'
    return stat.rsplit(")", 1)[1].split()


def _live() -> dict[int, list[str]]:
    """Every live process (zombies are not alive) and its stat fields."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry.name)) and fields[0] != "Z":
            found[int(entry.name)] = fields
    return found


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group ``pgid``."""
    return [pid for pid, fields in _live().items() if int(fields[2]) == pgid]


def groups_under(pid: int) -> set[int]:
    """The process groups of ``pid`` and of all its live descendants: a child that moved to
    a group of its own is still found through its parent, as long as the parent lives."""
    live = _live()
    children: dict[int, list[int]] = {}
    for child, fields in live.items():
        children.setdefault(int(fields[1]), []).append(child)
    groups, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            groups.add(int(live[child][2]))
            todo.append(child)
    groups.discard(os.getpgrp())  # a child left in our own group must not take us with it
    return groups


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop(processes: Iterable[Process], grace: float = GRACE) -> None:
    """Stop every process and everything in its group, and the groups its descendants made
    for themselves: SIGTERM, then SIGKILL after ``grace``.

    All groups share one deadline, so stopping five servers takes ``grace`` at most, not five
    times it. Returns once no member of any group is alive.
    """
    procs = list(processes)
    # read before any signal: a leader that exits leaves its children to init, out of reach
    groups = sorted({g for p in procs for g in groups_under(p.pid)})
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
    while time.monotonic() < deadline and any(group_members(g) for g in groups):
        time.sleep(0.05)  # the leaders are gone; their workers may still be finishing
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)  # whatever is left, leader or orphaned worker
    for proc in procs:
        proc.popen.wait()
    end = time.monotonic() + 5.0
    while any(group_members(g) for g in groups) and time.monotonic() < end:
        time.sleep(0.02)  # SIGKILL is asynchronous: wait until the kernel has reaped them


def wait_until(
    ready: Callable[[], bool], proc: Process, limit: float = 60.0, poll: float = 0.05
) -> None:
    """Return once ``ready()`` holds; raise with the process's last lines if it dies or stalls."""
    deadline = time.monotonic() + limit
    while not ready():
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} not ready within {limit:.0f} s:\n{proc.tail()}")
        time.sleep(poll)


def wait_ready(proc: Process, ready: Callable[[], bool], limit: float) -> None:
    """Return once ``ready()``; if ``proc`` exits first or ``limit`` passes, stop it and raise
    ``StackError`` (a server that never answered is the stack's to report)."""
    from milkprice.errors import StackError

    try:
        wait_until(ready, proc, limit=limit, poll=0.1)
    except RuntimeError as exc:
        stop([proc])
        raise StackError(str(exc)) from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different free ports: each held until all are chosen, so none repeats."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]


def function_command(
    target: str,
    source: str | os.PathLike[str] | None,
    port: int,
    host: str = "127.0.0.1",
    signature: str = "http",
    bin_dir: str | os.PathLike[str] | None = None,
) -> list[str]:
    """The command that serves one function as its deployment does: the Functions Framework.

    ``source`` None means ``main.py`` in the working directory (a deployed bundle).
    """
    binary = Path(bin_dir or Path(sys.executable).parent) / "functions-framework"
    args = [str(binary), "--target", target, "--signature-type", signature]
    if source is not None:
        args += ["--source", str(source)]
    return [*args, "--host", host, "--port", str(port)]


def unwind_on_sigterm() -> None:
    """SIGTERM (a CI timeout, a stop) unwinds like Ctrl-C, ``finally`` blocks and all, so the
    caller's children are still stopped; the exit status is the signal's usual 143."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def wait_for_stop() -> str:
    """Block until SIGINT or SIGTERM arrives (a long-running service's main loop); its name."""
    import threading

    got: list[str] = []
    done = threading.Event()

    def stop(number: int, _: object) -> None:
        got.append(signal.Signals(number).name)
        done.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    done.wait()
    return got[0]
