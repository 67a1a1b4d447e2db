"""``harness`` commands for the tests, started as forks of :mod:`harness_fork_server`.

:class:`HarnessProcess` is a :class:`subprocess.Popen` for ``harness ARGS``: pipes, files, a
pseudo-terminal, ``input=``, timeouts, signals and ``kill`` all behave as with a real
``subprocess.Popen``, and ``pid`` is the pid of the process that runs the command (a fork of the
server, not a child of the test; its exit status comes back through the server). Where a fork
would not be the same process a fresh interpreter would be (an environment that sets what Python,
libgomp or malloc read at start-up; ``HARNESS_TEST_FORK=0``; no server), it is a real ``exec`` of
the console script, so nothing a test asserts depends on the shortcut.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SERVER_SCRIPT = Path(__file__).with_name("harness_fork_server.py")

#: Environment variables read when an interpreter or a native library starts (or when a library
#: the server imported was imported): a fork has the server's values, so a command that asks for
#: others runs as a real exec. Only these: libraries in the test process add variables of their
#: own to its environment (torch: ``KMP_*``, ``TORCHINDUCTOR_CACHE_DIR``; the harness:
#: ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``), which a command inherits but reads only later.
_AT_START_UP = ("PYTHON", "OMP_", "MKL_", "OPENBLAS_", "LD_", "MALLOC_", "GLIBC_TUNABLES", "MLFLOW_CONFIGURE_LOGGING",
                "MLFLOW_LOGGING_LEVEL", "MPLBACKEND", "MPLCONFIGDIR", "HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME",
                "TMPDIR", "CUDA_", "LANG", "LC_")
#: … except these, which the child applies itself (``sys.path``, ``sys.dont_write_bytecode``;
#: unbuffered streams only make output appear sooner).
_APPLIED_IN_CHILD = ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")
#: The suite's commands run with one intra-op thread unless a test's environment says otherwise:
#: tiny RNNs on a shared 2-core machine only contend with more (and results are the same).
SUITE_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def harness_script() -> str:
    """The installed ``harness`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "harness"
    if script.exists():
        return str(script)
    found = shutil.which("harness")
    if found is None:
        raise RuntimeError("no `harness` console script: run ./setup.sh (pip install -e .)")
    return found


def fork_environment() -> dict[str, str]:
    """The environment the server starts with (and so every forked command's start-up sees)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "MLFLOW_")) and k != "PYTHONPATH"}
    env.update(SUITE_THREADS, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _start_up_settings(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_AT_START_UP) and k not in _APPLIED_IN_CHILD}


class _Server:
    def __init__(self) -> None:
        self.env = fork_environment()
        self.folder = tempfile.mkdtemp(prefix="harness-fork-")
        self.path = os.path.join(self.folder, "socket")
        self.process = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), self.path, str(os.getpid())],
                                        env=self.env, cwd=self.folder, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "ready":
            self.process.kill()
            raise RuntimeError(f"the harness fork server did not start (it said {line!r})")
        self.settings = _start_up_settings(self.env)

    def serves(self, env: Mapping[str, str]) -> bool:
        return self.process.poll() is None and _start_up_settings(env) == self.settings

    def fork(self, request: dict[str, Any], fds: Sequence[int]) -> tuple[socket.socket, int]:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(self.path)
            payload = json.dumps(request).encode()
            socket.send_fds(connection, [struct.pack("!Q", len(payload))], list(fds))
            connection.sendall(payload)
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = connection.recv(64)
                if not chunk:
                    raise RuntimeError("the harness fork server closed the connection before forking")
                reply += chunk
            if reply.startswith(b"error "):  # what Popen raises when the child cannot start
                number, message = reply[6:].decode().strip().split(" ", 1)
                raise OSError(int(number), message)
            return connection, int(reply)
        except BaseException:
            connection.close()
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


_server: _Server | None = None
_server_failed = False
_server_lock = threading.Lock()


def _server_for(env: Mapping[str, str]) -> _Server | None:
    """The running server if a fork of it is what ``env`` would start, else None (then: exec)."""
    global _server, _server_failed
    if os.environ.get("HARNESS_TEST_FORK", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    with _server_lock:
        if _server is None and not _server_failed:
            try:
                _server = _Server()
                atexit.register(_server.stop)
            except (OSError, RuntimeError) as error:
                _server_failed = True
                print(f"harness fork server unavailable, commands run as exec: {error}", file=sys.stderr)
        server = _server
    return server if server is not None and server.serves(env) else None


def start_server() -> None:
    """Start the server now (in the environment the suite's commands get) rather than at the first command."""
    _server_for(fork_environment())


def why_not_forked(env: Mapping[str, str]) -> str:
    """Why a command with ``env`` would run as a real exec ("" when it would be forked)."""
    if _server is None:
        return "no fork server" + (" (it failed to start)" if _server_failed else "")
    if _server.process.poll() is not None:
        return f"the fork server exited with {_server.process.returncode}"
    wanted = _start_up_settings(env)
    differ = sorted(k for k in wanted.keys() | _server.settings.keys() if wanted.get(k) != _server.settings.get(k))
    return f"start-up settings differ from the server's: {differ}" if differ else ""


class HarnessProcess(subprocess.Popen):  # type: ignore[type-arg]
    """``subprocess.Popen`` of ``harness ARGS`` (the arguments after ``harness``), usually as a fork.

    ``env`` defaults to the test's environment; :data:`SUITE_THREADS` are added where it does not set them.
    ``fork=False`` always execs: the process is then this one's child, so once killed its pid stays taken
    (a zombie) until it is waited for, as a process on another machine would seem alive; a fork is the
    server's child, reaped by it at once.
    """

    def __init__(self, args: Sequence[Any], *, fork: bool = True, **kwargs: Any) -> None:
        self.harness_args = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
        env = kwargs["env"] = {**SUITE_THREADS, **(os.environ if kwargs.get("env") is None else kwargs["env"])}
        forkable = fork and not kwargs.get("preexec_fn") and not kwargs.get("pass_fds")
        self._server = _server_for(env) if forkable else None
        if os.environ.get("HARNESS_TEST_FORK_LOG"):  # which commands were exec'd, and why
            with open(os.environ["HARNESS_TEST_FORK_LOG"], "a", encoding="utf-8") as log:
                reason = why_not_forked(env) if self._server is None else ""
                log.write(json.dumps({"pid": os.getpid(), "args": self.harness_args[:2], "exec": reason}) + "\n")
        self._connection: socket.socket | None = None
        self._status = b""
        super().__init__([harness_script(), *self.harness_args], **kwargs)

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env,  # type: ignore[no-untyped-def]
                       startupinfo, creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite,
                       *rest):
        if self._server is None:
            return super()._execute_child(args, executable, preexec_fn, close_fds, pass_fds, cwd, env,
                                          startupinfo, creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite,
                                          errread, errwrite, *rest)
        start_new_session = rest[-2]  # (restore_signals, gid, gids, uid, umask, start_new_session, process_group)
        fds = [p2cread if p2cread != -1 else 0, c2pwrite if c2pwrite != -1 else 1, errwrite if errwrite != -1 else 2]
        request = {"script": args[0], "args": self.harness_args, "cwd": os.fspath(cwd) if cwd else os.getcwd(),
                   "env": dict(os.environ if env is None else env), "new_session": bool(start_new_session)}
        try:
            self._connection, self.pid = self._server.fork(request, fds)
            self._child_created = True
        finally:
            self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)

    def _try_wait(self, wait_flags: int) -> tuple[int, int]:
        if self._connection is None:
            return super()._try_wait(wait_flags)
        self._connection.settimeout(0 if wait_flags & os.WNOHANG else None)
        while not self._status.endswith(b"\n"):
            try:
                chunk = self._connection.recv(64)
            except (TimeoutError, BlockingIOError):
                return 0, 0
            if not chunk:
                raise RuntimeError(f"the harness fork server went away before harness {self.harness_args} exited")
            self._status += chunk
        self._connection.close()
        return self.pid, int(self._status)

    def _internal_poll(self, _deadstate: Any = None, **_: Any) -> int | None:
        if self._connection is None:
            return super()._internal_poll(_deadstate)
        if self.returncode is None and self._waitpid_lock.acquire(False):
            try:
                if self.returncode is None:
                    pid, status = self._try_wait(os.WNOHANG)
                    if pid == self.pid:
                        self._handle_exitstatus(status)
            except (OSError, RuntimeError):
                if _deadstate is not None:
                    self.returncode = _deadstate
            finally:
                self._waitpid_lock.release()
        return self.returncode


def harness_run(args: Sequence[Any], *, input: str | bytes | None = None, timeout: float | None = None,
                check: bool = False, capture_output: bool = False, **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` for ``harness ARGS``."""
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with HarnessProcess(args, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        except BaseException:
            process.kill()
            raise
    completed = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check:
        completed.check_returncode()
    return completed
