"""One driver per suite: a lock file in the suite's storage folder, ``<storage>/<suite>/driver.lock``.

It records who holds it (host, pid, command, start) and is rewritten every ``HEARTBEAT_S`` seconds with
the trials the driver is running, which is how `harness status` tells running trials from waiting ones.
A lock is stale (taken over, with a line saying so) when its holder is a dead process on this host, or
when its heartbeat is older than ``STALE_S`` (a crashed driver on another host).

On a shared filesystem it is created with O_CREAT | O_EXCL (atomic on local filesystems and NFSv3+). An
object store has no exclusive create: the driver writes its record, waits, and reads it back; of two
drivers that raced, only the last writer reads its own record back.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from harness.core import schema
from harness.core.config import ConfigError

logger = logging.getLogger(__name__)


HEARTBEAT_S = 15.0
STALE_S = 120.0  # 8 missed heartbeats


class LockHeld(ConfigError):
    """Another live driver holds the suite."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_live(record: dict, now: float | None = None) -> bool:
    """Whether the driver that wrote ``record`` still runs."""
    now = time.time() if now is None else now
    if record.get("host") == socket.gethostname():
        return _pid_alive(record["pid"])
    return now - float(record.get("updated", 0)) < STALE_S


def _is_record(record) -> bool:
    """A lock record as drivers write it; anything else (a pid of 0 or -1 would be "alive" to os.kill) is stale."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("host"), str)
        and type(record.get("pid")) is int
        and record["pid"] > 0
        and isinstance(record.get("updated"), (int, float))
        and isinstance(record.get("token"), str)
        and isinstance(record.get("running", {}), dict)
        and all(isinstance(v, dict) for v in record.get("running", {}).values())
    )


def describe(record: dict) -> str:
    return (
        f"`{record.get('command', 'harness run')}` (pid {record.get('pid')} on {record.get('host')}, "
        f"since {record.get('started', '?')})"
    )


class SuiteLock:
    """``with SuiteLock(suite_dir, store, rel, command):`` holds the suite for the block."""

    def __init__(
        self,
        suite_dir: Path,
        store=None,
        rel: str | None = None,
        command: str = "harness run",
        break_lock: bool = False,
    ):
        self.path = Path(suite_dir) / schema.LOCK
        self.store, self.rel = store, f"{rel}/{schema.LOCK}" if rel else None
        self.break_lock = break_lock
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "token": uuid.uuid4().hex,
            "running": {},
        }
        self._stop = threading.Event()
        self._writing = threading.Lock()  # the heartbeat thread and set_running share the temporary file
        self._thread: threading.Thread | None = None
        self.where = f"{store.uri}/{self.rel}" if store else str(self.path)

    # --- the record, on disk or in the store
    def read(self) -> dict | None:
        try:
            text = self.store.read_text(self.rel) if self.store else self.path.read_text()
        except (FileNotFoundError, OSError):
            return None
        try:
            record = json.loads(text)
        except ValueError:
            return {}  # garbled: treated as stale
        return record if _is_record(record) else {}

    def _write(self, exclusive: bool) -> bool:
        with self._writing:
            return self._write_record(exclusive)

    def _write_record(self, exclusive: bool) -> bool:
        self.record["updated"] = time.time()
        data = json.dumps(self.record)
        if self.store:
            self.store.write_text(self.rel, data)
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if exclusive:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(data)
            except BaseException:  # a full disk: no empty lock left behind
                self.path.unlink(missing_ok=True)
                raise
            return True
        tmp = self.path.with_name(f".{schema.LOCK}.{self.record['token']}")
        try:
            tmp.write_text(data)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def _remove_stale(self, record: dict) -> None:
        if self.store:
            self.store.delete_file(self.rel)
            return
        # rename, not unlink: of two drivers taking over the same stale lock, only one rename succeeds
        try:
            os.rename(self.path, self.path.with_name(f".{schema.LOCK}.stale-{self.record['token']}"))
        except FileNotFoundError:
            return
        self.path.with_name(f".{schema.LOCK}.stale-{self.record['token']}").unlink(missing_ok=True)

    # --- taking and giving back
    def acquire(self) -> None:
        for _ in range(3):
            held = self.read()
            if held is not None:
                if held.get("token") == self.record["token"]:
                    break
                if held and is_live(held) and not self.break_lock:
                    raise LockHeld(
                        f"{self.where}: this suite is being run by {describe(held)}; wait for it to finish "
                        f"(`harness status` shows its progress), or, if that driver is gone, run again with "
                        f"--break-lock"
                    )
                what = "broken (--break-lock)" if held and is_live(held) else "stale"
                print(
                    f"lock: {self.where} held by {describe(held) if held else 'an unreadable record'} is {what}; "
                    f"taking it over",
                    flush=True,
                )
                self._remove_stale(held)
            if not self._write(exclusive=True):
                continue  # another driver created it between our read and our write: look again
            if self.store:
                time.sleep(2.0)  # let a racing writer land, then see whose record stayed
                if (self.read() or {}).get("token") != self.record["token"]:
                    continue
            break
        else:
            raise LockHeld(f"{self.where}: could not take the lock (another driver keeps taking it)")
        self._thread = threading.Thread(target=self._heartbeat, name="suite-lock", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write(exclusive=False)
            except OSError as err:  # a storage hiccup (pyarrow's errors are OSErrors too): the next beat tries again
                logger.debug("driver lock heartbeat not written: %s", err)

    def set_running(self, running: dict[str, dict]) -> None:
        """What the driver is running now ({trial_id: {epoch, step, steps}}): written at once, at most every
        2 s (else with the next heartbeat)."""
        self.record["running"] = running
        if time.time() - self.record.get("updated", 0) >= 2.0:
            try:
                self._write(exclusive=False)
            except OSError as err:  # the next heartbeat writes it
                logger.debug("driver lock's running trials not written: %s", err)

    def beat(self) -> None:
        self._write(exclusive=False)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        held = self.read()
        if held is not None and held.get("token") == self.record["token"]:
            if self.store:
                self.store.delete_file(self.rel)
            else:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> "SuiteLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def running_trials(suite_dir: Path, store=None, rel: str | None = None) -> tuple[dict | None, dict[str, dict]]:
    """(the live driver's record or None, the trials it runs) for `harness status`."""
    record = SuiteLock(suite_dir, store, rel).read()
    if not record or not is_live(record):
        return None, {}
    return record, dict(record.get("running") or {})
