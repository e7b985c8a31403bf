"""`harness ARGS` in a process forked from the test worker: the same CLI (``harness.cli.main``) in a process of its
own, without the interpreter's start and the seconds of imports each new one pays (torch, Ray, MLflow: ~7 of a small
sweep's ~28 CPU-seconds, measured with the tests' 4-trial suite).

A fork runs what a new interpreter would only when nothing it inherits could differ: no thread but this one (a fork
copies no other thread, and a lock one held would stay held), no Ray in this process, no plugin loaded or entry
registered here since the imports, and the same PYTHONPATH and HARNESS_*, RAY_* and MLFLOW_* variables as when
they were imported (a few modules read theirs at import). Otherwise ``run`` answers None and the caller starts a new
interpreter. The child leaves what pytest set up behind: its warning and log capture, signal handlers and exit handlers.

TESTS_NO_FORK=1 turns forking off (the same tests on new interpreters, to compare: three slow files, 448 s -> 268 s
on two workers here); TESTS_FORK_LOG=path appends each decision, with its test and reason, to that file."""

from __future__ import annotations

import atexit
import gc
import importlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

IMPORTED_ENV_PREFIXES = ("HARNESS_", "RAY_", "MLFLOW_")
SET_BY_THE_CODE = {  # set with these values by the harness (or Ray's import) in any process that needs them
    "RAY_AUTH_MODE", "RAY_AIR_NEW_OUTPUT", "RAY_CLIENT_MODE", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
}  # fmt: skip
HEAVY = (  # what the sweep and the report import, imported once in the test worker before their first fork
    "harness.commands.suite",
    "harness.execution.sweep",  # Ray Tune, torch
    "torch._dynamo",  # the FLOP count of the sweep's plan (harness.trial.cost)
    "mlflow.store.tracking.sqlalchemy_store",  # the tracking store
    "analysis.report",  # `harness report`: matplotlib
)
LIGHT_COMMANDS = {"list", "check-plugin", "slurm", "data"}  # forked after importing the CLI alone
base_env: dict | None = None  # the test worker's environment as conftest sets it up (None: never fork)
LOG = os.environ.get("TESTS_FORK_LOG")  # a file: each decision, with the test and the reason, appended
_entries_at_import: dict | None = None  # each registry's entries after the imports; None before the first fork


def _env_read_at_import(env) -> dict:
    return {k: v for k, v in env.items() if k.startswith(IMPORTED_ENV_PREFIXES) and k not in SET_BY_THE_CODE}


def _changed(env, reference) -> str | None:
    now, then = _env_read_at_import(env), _env_read_at_import(reference)
    keys = sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))
    return ", ".join(keys) or None


def _entries() -> dict:
    """Each registry's entries: the harness's own (discovered here once, as a new interpreter would) and any since."""
    from harness.core import plugins

    return {word: tuple(reg.names()) for word, reg in plugins.registries().items()}


def _unsafe() -> str | None:
    """Why a fork could differ from a new interpreter now, or None."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return "Ray is initialized in this process"
    from harness.core import plugins

    if plugins.shipped():
        return "a plugin is loaded in this process"
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join(timeout=1)  # one ending (a cancelled timer) is given a moment
    if threading.active_count() > 1:
        return f"other threads: {[t.name for t in threading.enumerate()][1:]}"
    return None


def _declined(command: str, env: dict) -> str | None:
    """Why ``command`` with ``env`` is not forked, or None; the imports are done on the first call that may fork."""
    global _entries_at_import
    if base_env is None:
        return "forking is off (TESTS_NO_FORK)"
    if keys := _changed(os.environ, base_env):
        return f"this worker's environment changed since the imports: {keys}"
    if why := _unsafe():
        return why
    if _entries_at_import is not None and _entries() != _entries_at_import:
        return "entries were registered or forgotten in this process"
    for module in ("harness.cli",) if command in LIGHT_COMMANDS else ("harness.cli", *HEAVY):
        if module not in sys.modules:
            importlib.import_module(module)
            _entries_at_import = None  # what the imports registered is theirs
    if _entries_at_import is None:
        _entries_at_import = _entries()
    if keys := _changed(env, base_env):
        return f"the command's environment differs: {keys}"
    if env.get("PYTHONPATH") != base_env.get("PYTHONPATH"):
        return "the command's PYTHONPATH differs (what it imports, its installed plugins)"
    return _unsafe()  # the imports started no thread


def run(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess | None:
    """`harness ARGS` with environment ``env`` in a forked child, output captured; None where a fork is not safe."""
    why = _declined(args[0] if args else "", env)
    if LOG:
        with open(LOG, "a") as log:
            print(f"{os.getpid()} {os.environ.get('PYTEST_CURRENT_TEST', '?')} {args[0]}: {why or 'forked'}", file=log)
    if why:
        return None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    gc.collect()
    gc.freeze()  # the child's collections skip what is already here (else each copies every page it scans)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(out_r)
        os.close(err_r)
        _child(args, env, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}

    def drain(fd: int) -> None:
        while data := os.read(fd, 1 << 16):
            chunks[fd].append(data)
        os.close(fd)

    readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in chunks]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise subprocess.TimeoutExpired(["harness", *args], timeout)
        time.sleep(0.02)
    for reader in readers:
        reader.join(timeout=30)
    text = {fd: b"".join(parts).decode(errors="replace") for fd, parts in chunks.items()}
    return subprocess.CompletedProcess(["harness", *args], os.waitstatus_to_exitcode(status), text[out_r], text[err_r])


def _child(args: list[str], env: dict, out_w: int, err_w: int) -> None:
    code = 1
    try:
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.close(out_w)
        os.close(err_w)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
        atexit._clear()  # the test worker's exit handlers are not this command's
        _as_a_new_interpreter()
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.environ.clear()
        os.environ.update(env)
        import harness

        sys.argv = [str(Path(harness.__file__).with_name("__main__.py")), *args]  # as `python -m harness` has it
        sys.path.insert(0, os.getcwd())
        _forget_open_stores()
        from harness.cli import main

        code = main(args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()  # Ray's shutdown among them, as at a normal interpreter exit
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _as_a_new_interpreter() -> None:
    """Warnings printed and filtered, and logging unconfigured, as in a new interpreter (pytest records both)."""
    import logging
    import warnings

    warnings.showwarning = warnings._showwarning_orig
    warnings.resetwarnings()
    for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
        warnings.simplefilter("ignore", category)  # CPython's default filters, the last added first
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    logging.root.handlers.clear()
    logging.root.setLevel(logging.WARNING)


def _forget_open_stores() -> None:
    """MLflow caches its stores (and their database connections) by URI: a child gets its own, never one this
    test worker opened before the fork."""
    from mlflow.tracking._tracking_service import utils

    utils._tracking_store_registry._get_store_with_resolved_uri.cache_clear()
