"""Who holds a run: a worker id that stays unique across hosts, containers and PID namespaces.

``host:pid:random:boot:pidns:start``: the boot id (``/proc/sys/kernel/random/boot_id``) names the
running kernel, the PID-namespace inode names the PID numbering the pid belongs to, and the start
time (clock ticks since boot) tells a pid from a later process that reuses it. A worker is declared
dead only when all of these say its process is gone from *our* view of *our* kernel; anywhere else
(another host, container or namespace) only its lease can tell.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:16]
    except OSError:
        return "unknown"


def pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "unknown"


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or None if gone.

    Only meaningful when /proc is our PID namespace's (``unshare`` without ``--mount-proc`` keeps the
    parent's): :func:`_proc_is_ours` says so."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # fields after "(comm)" start at field 3


def _proc_is_ours() -> bool:
    try:
        return int(Path("/proc/self/stat").read_text().split()[0]) == os.getpid()
    except (OSError, ValueError, IndexError):
        return False


def worker_id() -> str:
    """``host:pid:random:boot:pidns:start``, unique per process start."""
    pid = os.getpid()
    start = start_ticks(pid) if _proc_is_ours() else None
    return f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}:{boot_id()}:{pid_namespace()}:{start or 'unknown'}"


def dead_local_owner(owner: str | None) -> bool:
    """True only when ``owner``'s process is certainly gone: same host, kernel and PID namespace, and
    its pid no longer runs (or runs a later process). Ids from older versions (``host:pid:random``)
    are judged by host and pid, as those versions did."""
    parts = (owner or "").split(":")
    if len(parts) < 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if len(parts) == 3:
        return _pid_gone(pid)
    if len(parts) != 6 or "unknown" in parts[3:5] or parts[3] != boot_id() or parts[4] != pid_namespace():
        return False  # another kernel or PID namespace: its pid means nothing here
    if parts[5] == "unknown" or not _proc_is_ours():
        return _pid_gone(pid)
    started = start_ticks(pid)
    return started is None or started != parts[5]  # gone, or the pid now belongs to a later process


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
