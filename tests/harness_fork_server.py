"""The test suite's fork server: one interpreter that has imported harness's heavy dependencies
(torch, Lightning, MLflow, Optuna, pandas, …) forks a fresh process for each ``harness`` command.

Why: a ``harness`` process spends 4–6 s of CPU importing those libraries before it does anything,
and the suite starts some 150 of them; on a 2-core machine that alone is most of the suite's
time. A fork of this server starts in milliseconds and then runs exactly what the console
script runs: the script file itself is executed as ``__main__`` in the child, with the test's
arguments, working folder, environment and standard streams, so it imports ``harness`` afresh
(nothing of ``harness`` is imported here), reads its environment afresh, and exits, is signalled
or killed as its own process with its own pid. What a fork cannot redo is only what an
interpreter decides at start-up; :mod:`forked_harness` sends a command whose environment would
change that (``PYTHON*``, thread counts, ``LD_*``, malloc settings, …) to a real ``exec`` instead.

Protocol (a Unix socket, one connection per command): the client sends an 8-byte length and,
with it as SCM_RIGHTS, the three file descriptors the command's stdin, stdout and stderr are;
then the request as JSON. The server answers the child's pid (a line) once the child has set
itself up, or ``error ERRNO MESSAGE`` if it could not (a missing working folder), and when the
child has exited its raw wait status (a line). The server exits by itself when the process that started
it (the pytest process) is gone.

Run as ``python harness_fork_server.py SOCKET PARENT_PID``; it prints ``ready`` when it listens.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import socket
import struct
import sys

#: Imported once here; every child finds them in ``sys.modules``. Not ``harness``: the child imports it.
PRELOAD = ("numpy", "torch", "pytorch_lightning", "torchmetrics", "mlflow", "mlflow.tracking",
           "mlflow.store.tracking.sqlalchemy_store", "optuna", "pandas", "scipy.stats", "sklearn.metrics",
           "matplotlib", "matplotlib.figure", "seqeval.metrics", "sqlalchemy", "alembic", "pydantic", "click", "yaml",
           "mido", "psutil", "tqdm", "rich", "pluggy", "scikit_posthocs", "mlflow.store.db.utils")


#: ``sys.path`` after the script's folder: the standard library and site-packages (set in ``serve``).
SITE_PATH: list[str] = []


#: Variables the preloaded libraries put into ``os.environ`` on import (torch: TORCHINDUCTOR_CACHE_DIR, …).
SET_BY_IMPORTS: dict[str, str] = {}


def _receive(connection: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(connection, 8, 3)
    while len(header) < 8:
        more = connection.recv(8 - len(header))
        if not more:
            raise EOFError("client went away")
        header += more
    (length,) = struct.unpack("!Q", header)
    payload = bytearray()
    while len(payload) < length:
        chunk = connection.recv(min(1 << 20, length - len(payload)))
        if not chunk:
            raise EOFError("client went away")
        payload += chunk
    return json.loads(payload), list(fds)


def _run_child(request: dict, fds: list[int], started: int) -> None:
    """In the forked child: become ``harness ARGS`` and never return. ``started`` is closed once the
    process is set up (as a successful exec closes Popen's error pipe), or gets the error."""
    import atexit
    import builtins
    import signal
    import tempfile
    import threading
    import traceback
    import types

    if request["new_session"]:
        os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds):
        if fd > 2:
            os.close(fd)
    try:
        os.chdir(request["cwd"])
    except OSError as error:
        os.write(started, f"{error.errno} {error.strerror}: {request['cwd']!r}".encode())
        os._exit(255)
    os.environ.clear()
    os.environ.update(SET_BY_IMPORTS)  # what the libraries set when a fresh interpreter imports them
    os.environ.update(request["env"])
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    tempfile.tempdir = None  # computed again from this environment's TMPDIR
    importlib.invalidate_caches()  # plugins installed since the server started are found
    import numpy

    numpy.random.seed()  # a fresh interpreter draws its own; the ``random`` module reseeds itself after fork

    os.close(started)
    script = request["script"]
    sys.argv = [script, *request["args"]]
    # What the interpreter puts first for a script, then PYTHONPATH's folders, then the site's.
    extra = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[:] = [os.path.dirname(script), *extra, *SITE_PATH]
    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    status, interrupted = 0, False
    try:
        with open(script, encoding="utf-8") as handle:
            code = compile(handle.read(), script, "exec")
        exec(code, main.__dict__)  # noqa: S102 - the console script, as the interpreter would run it
    except SystemExit as exit_:
        if exit_.code is None:
            status = 0
        elif isinstance(exit_.code, int):
            status = exit_.code & 0xFF
        else:
            print(exit_.code, file=sys.stderr)
            status = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:  # noqa: BLE001 - printed as the interpreter prints an uncaught exception
        sys.excepthook(*sys.exc_info())
        status = 1
    # The interpreter's own shutdown: wait for non-daemon threads, run atexit, flush.
    try:
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001, S110 - a broken stream at exit: the interpreter ignores it too
        pass
    if interrupted:  # as CPython ends on an uncaught KeyboardInterrupt: killed by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status)


def _read_all(fd: int) -> str:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    os.close(fd)
    return data.decode(errors="replace")


def serve(socket_path: str, parent_pid: int) -> None:
    SITE_PATH[:] = sys.path[1:]  # started without PYTHONPATH: sys.path[0] is this file's folder
    before = dict(os.environ)
    for name in PRELOAD:
        importlib.import_module(name)
    SET_BY_IMPORTS.update({k: v for k, v in os.environ.items() if k not in before})
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(64)
    print("ready", flush=True)
    waiting: dict[int, socket.socket] = {}
    while os.getppid() == parent_pid:
        ready, _, _ = select.select([server], [], [], 0.02)
        if ready:
            connection, _ = server.accept()
            try:
                request, fds = _receive(connection)
            except (OSError, EOFError, ValueError):
                connection.close()
                continue
            started_read, started_write = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    server.close()
                    connection.close()
                    os.close(started_read)
                    for other in waiting.values():
                        other.close()
                    _run_child(request, fds, started_write)
                finally:
                    os._exit(70)
            os.close(started_write)
            for fd in fds:
                os.close(fd)
            failure = _read_all(started_read)
            waiting[pid] = connection
            try:
                connection.sendall(f"error {failure}\n".encode() if failure else f"{pid}\n".encode())
            except OSError:
                pass
        while waiting:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            connection = waiting.pop(pid, None)
            if connection is not None:
                try:
                    connection.sendall(f"{status}\n".encode())
                except OSError:
                    pass
                connection.close()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
