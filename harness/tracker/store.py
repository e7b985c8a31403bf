"""Where a suite's MLflow runs go: the tracking URI (the flag, the suite's, $MLFLOW_TRACKING_URI, else sqlite
beside the results), the store's own checks (an sqlite file that is not a database), the lock under which a fresh
store's tables are created (from a copy of an empty store, made once per MLflow version), the record of trials kept
back in an outage; how to look at the runs."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sqlite3
from pathlib import Path

from harness.core import environment, schema
from harness.core.config import ConfigError
from harness.store.errors import ResourceError, out_of_space

SQLITE_MAGIC = b"SQLite format 3\x00"


def suite_tracking_uri(suite, tracking_uri: str | None = None) -> str:
    """--tracking-uri, else the suite's, else $MLFLOW_TRACKING_URI, else sqlite in the storage; checked."""
    from harness.planning.suite import check_tracking_uri

    return check_tracking_uri(tracking_uri or suite.tracking.uri or default_tracking_uri(suite.results_root))


def default_tracking_uri(storage: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(storage).resolve() / schema.MLFLOW_DB}"


def kept_back(suite_dir: Path) -> dict:
    try:
        record = json.loads((Path(suite_dir) / schema.KEPT_BACK).read_text())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def sqlite_path(uri: str) -> Path | None:
    """The file of an sqlite store's URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def check_store(uri: str) -> None:
    """An sqlite store that is not a database is one line naming it (MLflow would end in SQLAlchemy's traceback);
    it is only a mirror of the trial folders, so moving it aside loses nothing."""
    path = sqlite_path(uri)
    if path is None:
        return
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return
    except OSError as err:
        raise TrackingStoreError(f"the MLflow store {path} cannot be read ({err.strerror})") from err
    if head and head != SQLITE_MAGIC:
        raise TrackingStoreError(
            f"the MLflow store {path} is not an SQLite database; move it aside and run again: the runs are rebuilt "
            f"from the trial folders (or pass --tracking-uri)"
        )


DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def check_answers(uri: str) -> None:
    """A database store (PostgreSQL, MySQL, SQL Server) accepts a connection within $HARNESS_STORE_TIMEOUT_S
    seconds, or ConnectionError naming it: MLflow would retry creating its engine for ~100 s first (10 attempts,
    doubling)."""
    from urllib.parse import urlparse

    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme not in DATABASE_PORTS or not parsed.hostname:  # a socket folder, a file: nothing to dial
        return
    where = (parsed.hostname, parsed.port or DATABASE_PORTS[scheme])
    try:
        socket.create_connection(where, timeout=environment.seconds("HARNESS_STORE_TIMEOUT_S")).close()
    except OSError as err:
        raise ConnectionError(
            f"the MLflow store {scheme}://{where[0]}:{where[1]} does not answer ({err.strerror or err})"
        ) from None


class TrackingStoreError(ConfigError):
    """A tracking store that is there but unusable (not a busy or unreachable one: that is an outage); exit 2."""


@contextlib.contextmanager
def store_creation(uri: str):
    """Held while a sqlite store's tables are created or migrated: two drivers started together on fresh storage
    would otherwise both create them (`table experiments already exists`) before either reaches the suite lock."""
    path = sqlite_path(uri)
    if path is None or not path.parent.is_dir():
        yield
        return
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or by the OS if this process dies
        existed = path.exists()
        try:
            yield
        except Exception as err:
            if not existed:  # half-made tables would break the next run
                path.unlink(missing_ok=True)
            if out_of_space(err, path.parent):
                raise ResourceError(
                    f"no space left on device for the MLflow store {path}; free some space and run the same command "
                    f"again"
                ) from err
            raise


def seed_sqlite_store(uri: str) -> None:
    """A new sqlite store begins as a copy of an empty one that MLflow made once per MLflow version in the user's cache
    (MLflow creates a store's tables through its ~60 schema migrations: seconds for every new store; the copy takes
    milliseconds). The copy holds MLflow's tables and no experiment: MLflow adds its Default experiment on opening the
    store, as it does for a store it creates itself. Call under ``store_creation``; where no copy can be made (an
    unwritable cache, a full disk), MLflow creates the tables as before."""
    path = sqlite_path(uri)
    if path is None or path.exists() or not path.parent.is_dir():
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}.copy")
    try:
        shutil.copyfile(_empty_store(), partial)
        os.replace(partial, path)
    except Exception:  # no copy (an unwritable cache, a full disk, MLflow failing on the cache): MLflow makes it
        partial.unlink(missing_ok=True)


def _empty_store() -> Path:
    """The empty store of this MLflow version in the user's cache, made by MLflow (under a lock: one maker)."""
    import mlflow

    from harness.store.filesystems import user_cache

    template = user_cache() / "mlflow" / f"empty-store-{mlflow.__version__}.db"
    if template.exists():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    with open(template.parent / f".{template.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.exists():
            from mlflow.tracking import MlflowClient

            made = template.with_name(f".{template.name}.{os.getpid()}")
            made.unlink(missing_ok=True)
            MlflowClient(f"sqlite:///{made}").search_experiments(max_results=1)  # MLflow's tables, all migrations
            with contextlib.closing(sqlite3.connect(made)) as db, db:
                db.execute("DELETE FROM experiments")  # its Default experiment: each store gets its own on opening
            os.replace(made, template)
    return template


def mlflow_hint(suite, tracking_uri: str | None = None) -> str:
    """How to look at the suite's runs in the MLflow UI."""
    uri = suite_tracking_uri(suite, tracking_uri)
    if uri.startswith(("http://", "https://")):
        return f"MLflow: {uri} (experiment {suite.tracking.experiment or suite.name})"
    return f"MLflow: mlflow ui --backend-store-uri {uri}   (experiment {suite.tracking.experiment or suite.name})"
