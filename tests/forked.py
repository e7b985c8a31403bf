"""`harness ARGS` forked from a fork server: the same CLI (``harness.cli.main``) in a process of its own, without the
interpreter's start and the seconds of imports each new one pays (torch, Ray, MLflow: ~7 of a small sweep's ~28
CPU-seconds, measured with the tests' 4-trial suite).

The server is a new interpreter (``python tests/forked.py SOCKET``), one per test worker, started at the worker's
first forked command. It imports what the commands import, discovers the harness's own registry entries, and then
only forks: it never runs a test, so no test can leave in it what a fork would carry into a command (threads, an
initialized Ray or process group, open database connections, a loaded plugin). For each command it forks a handler,
which forks the command's process (the CLI with the command's environment, working directory and output pipes),
waits for it and answers its exit status.

A command runs on a new interpreter instead (``run`` answers None) in a fast test (the fast lane's few commands do
not repay a server's imports), and where the server's imports could have read something else: its PYTHONPATH, or a
RAY_* or MLFLOW_* variable differs from the server's (Ray and MLflow read some of theirs at import; the harness reads
its HARNESS_* variables only where it uses them, which tests/test_layout.py checks).
TESTS_NO_FORK=1 turns forking off (the same tests on new interpreters, to compare); TESTS_FORK_LOG=path appends
each decision, with its test and reason, to that file."""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPORTED_ENV_PREFIXES = ("RAY_", "MLFLOW_")  # HARNESS_*: read when used, never at import
SET_BY_THE_CODE = {  # set with these values by the harness (or Ray) in any process that needs them
    "RAY_AUTH_MODE", "RAY_AIR_NEW_OUTPUT", "RAY_CLIENT_MODE", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT", "RAY_USAGE_STATS_ENABLED",
}  # fmt: skip
IMPORTS = (  # what commands import: the CLI, the sweep (Ray Tune, torch), the plan's FLOP count, the store, the report
    "harness.cli",
    "harness.commands.suite",
    "harness.execution.sweep",
    "torch._dynamo",
    "mlflow.store.tracking.sqlalchemy_store",
    "analysis.report",
)
base_env: dict | None = None  # a command's default environment, set by conftest (None: never fork); the server's
in_a_slow_test = True  # set by conftest per test: a fast test's command or two cost less than a server's imports
LOG = os.environ.get("TESTS_FORK_LOG")  # a file: each decision, with the test and the reason, appended
_server: tuple[subprocess.Popen, str] | None = None  # this worker's server and its socket


def _env_read_at_import(env) -> dict:
    return {k: v for k, v in env.items() if k.startswith(IMPORTED_ENV_PREFIXES) and k not in SET_BY_THE_CODE}


def _declined(env: dict) -> str | None:
    """Why a command with ``env`` does not fork, or None."""
    if base_env is None:
        return "forking is off (TESTS_NO_FORK)"
    if not in_a_slow_test:
        return "a fast test (its few commands do not repay a fork server's imports)"
    now, then = _env_read_at_import(env), _env_read_at_import(base_env)
    if keys := sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k)):
        return f"the command's environment differs: {', '.join(keys)}"
    if env.get("PYTHONPATH") != base_env.get("PYTHONPATH"):
        return "the command's PYTHONPATH differs (what it imports, its installed plugins)"
    return None


def run(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess | None:
    """`harness ARGS` with environment ``env``, forked by the server, output captured as `subprocess.run` captures
    it; None where a new interpreter must run it."""
    why = _declined(env)
    if LOG:
        with open(LOG, "a") as log:
            print(f"{os.getpid()} {os.environ.get('PYTEST_CURRENT_TEST', '?')} {args[0]}: {why or 'forked'}", file=log)
    if why:
        return None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    with socket.socket(socket.AF_UNIX) as server:
        server.connect(_started())
        request = json.dumps({"args": args, "env": env, "cwd": os.getcwd()}).encode()
        socket.send_fds(server, [len(request).to_bytes(8, "big")], [out_w, err_w])
        server.sendall(request)
        os.close(out_w)
        os.close(err_w)
        answers = server.makefile("rb")
        pid = _answer(answers)
        chunks = _read_until_closed(out_r, err_r, time.monotonic() + timeout)
        if chunks is None:
            os.kill(pid, signal.SIGKILL)
            answers.readline()
            raise subprocess.TimeoutExpired(["harness", *args], timeout)
        status = _answer(answers)
    out, err = (b"".join(chunks[fd]).decode(errors="replace") for fd in (out_r, err_r))
    return subprocess.CompletedProcess(["harness", *args], os.waitstatus_to_exitcode(status), out, err)


def _answer(answers) -> int:
    """The handler's next answer: the command's pid, then its wait status."""
    if not (line := answers.readline()):
        raise RuntimeError("the fork server's handler ended without answering (see the test's captured stderr)")
    return int(line)


def _read_until_closed(out_r: int, err_r: int, deadline: float) -> dict[int, list[bytes]] | None:
    """Both pipes read until every writer closed them (as `subprocess.run`: a process the command left running keeps
    them open), or None at the deadline; closed either way."""
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    with selectors.DefaultSelector() as pipes:
        for fd in chunks:
            pipes.register(fd, selectors.EVENT_READ)
        while pipes.get_map() and time.monotonic() < deadline:
            for key, _ in pipes.select(timeout=1):
                if data := os.read(key.fd, 1 << 16):
                    chunks[key.fd].append(data)
                else:
                    pipes.unregister(key.fd)
                    os.close(key.fd)
        for key in list(pipes.get_map().values()):
            os.close(key.fd)
        return None if pipes.get_map() else chunks


def _started() -> str:
    """This worker's server's socket; the server is started (and waited for) on the first call."""
    global _server
    if _server is None or _server[0].poll() is not None:
        path = os.path.join(tempfile.mkdtemp(prefix="harness-fork-"), "socket")
        process = subprocess.Popen(
            [sys.executable, __file__, path], env=base_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )  # its stdin closes with this worker: the server then ends
        if process.stdout.readline() != b"ready\n":
            raise RuntimeError(f"the fork server did not start (exit code {process.wait()})")
        _server = (process, path)
    return _server[1]


# The server's side.


def serve(path: str) -> None:
    """Import what the commands import, then fork a handler per connection until this worker closes stdin."""
    for module in IMPORTS:
        importlib.import_module(module)
    from harness.core import plugins

    for registry in plugins.registries().values():
        registry.names()  # the harness's own entries, discovered once
    gc.collect()
    gc.freeze()  # the children's collections skip what is here (else each copies every page it scans)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    print("ready", flush=True)
    with selectors.DefaultSelector() as events:
        events.register(listener, selectors.EVENT_READ)
        events.register(sys.stdin, selectors.EVENT_READ)
        while True:
            for key, _ in events.select():
                if key.fileobj is sys.stdin:  # the worker is gone
                    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
                    return
                connection, _ = listener.accept()
                if os.fork() == 0:
                    listener.close()
                    _handle(connection)
                connection.close()


def _handle(connection: socket.socket) -> None:
    """The handler: one command's process forked, its pid then its wait status answered. Never returns."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        message, (out_w, err_w), _, _ = socket.recv_fds(connection, 8, 2)
        request = json.loads(_receive(connection, int.from_bytes(message, "big")))
        pid = os.fork()
        if pid == 0:
            connection.close()
            _command(request["args"], request["env"], request["cwd"], out_w, err_w)
        os.close(out_w)
        os.close(err_w)
        connection.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        connection.sendall(f"{status}\n".encode())
    finally:
        os._exit(0)


def _receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        if not (chunk := connection.recv(size - len(data))):
            raise ConnectionError("the test worker closed its connection mid-request")
        data += chunk
    return data


def _command(args: list[str], env: dict, cwd: str, out_w: int, err_w: int) -> None:
    """`python -m harness ARGS` as a new interpreter runs it, in this forked process. Never returns."""
    code = 1
    exit_handlers = _own_exit_handlers()
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.close(out_w)
        os.close(err_w)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        import harness

        sys.argv = [str(Path(harness.__file__).with_name("__main__.py")), *args]  # as `python -m harness` has it
        sys.path[0] = cwd
        from harness.cli import main

        code = main(args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            _exit_as_an_interpreter(exit_handlers)
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _own_exit_handlers() -> list:
    """The exit handlers the command registers, run at its end; the server's (its imports') are not this command's
    to run, but Ray's shutdown and logging's are run as an interpreter's exit would (see below)."""
    handlers: list = []

    def register(func, *args, **kwargs):
        handlers.append((func, args, kwargs))
        return func

    def unregister(func):
        handlers[:] = [h for h in handlers if h[0] != func]

    atexit.register, atexit.unregister = register, unregister
    return handlers


def _exit_as_an_interpreter(exit_handlers: list) -> None:
    """What an interpreter does at exit: join its threads, then run its exit handlers, the last registered first
    (Ray's shutdown and logging's, registered at import in the server, among them), and flush its output."""
    import logging
    import threading
    import traceback

    threading._shutdown()
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        exit_handlers.insert(0, (sys.modules["ray"].shutdown, (), {}))
    exit_handlers.insert(0, (logging.shutdown, (), {}))
    for func, args, kwargs in reversed(exit_handlers):
        try:
            func(*args, **kwargs)
        except BaseException:
            print(f"Exception ignored in atexit callback: {func!r}", file=sys.stderr)
            traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    serve(sys.argv[1])
