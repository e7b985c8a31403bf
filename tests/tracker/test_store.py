"""harness.tracker.store: where a suite's runs go and the store's own checks, on real sqlite files, a real closed
port and two real processes creating one store."""

import multiprocessing
import sqlite3
import time

import pytest

from harness.core import environment, schema
from harness.store.errors import ResourceError
from harness.store.files import write_json
from harness.tracker import store
from helpers import free_port


def test_the_default_store_is_sqlite_beside_the_results_unless_the_environment_names_one(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store.default_tracking_uri(tmp_path / "results") == f"sqlite:///{tmp_path / 'results' / schema.MLFLOW_DB}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert store.default_tracking_uri(tmp_path) == "http://mlflow.example:5000"


def test_a_store_file_that_is_not_sqlite_is_one_line_and_a_real_database_passes(tmp_path):
    real = tmp_path / "real.db"
    sqlite3.connect(real).execute("create table t (x)").connection.close()  # the sqlite library's own file
    store.check_store(f"sqlite:///{real}")
    store.check_store(f"sqlite:///{tmp_path / 'absent.db'}")  # MLflow creates it
    store.check_store("http://host:5000")  # not a file
    fake = tmp_path / "mlflow.db"
    fake.write_text("name,value\n")
    with pytest.raises(store.TrackingStoreError) as err:
        store.check_store(f"sqlite:///{fake}")
    assert str(err.value).startswith(f"the MLflow store {fake} is not an SQLite database; move it aside")


def test_a_database_server_that_does_not_answer_is_named_within_the_timeout():
    port = free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"the MLflow store postgresql://127.0.0.1:{port} does not answer"):
        store.check_answers(f"postgresql+psycopg://u:p@127.0.0.1:{port}/mlflow")
    assert time.monotonic() - start < environment.seconds("HARNESS_STORE_TIMEOUT_S") + 1
    store.check_answers("postgresql:///mlflow?host=/var/run/postgresql")  # a socket folder: nothing to dial
    store.check_answers("sqlite:///x.db")


def test_kept_back_reads_what_an_outage_left_and_nothing_else(tmp_path):
    assert store.kept_back(tmp_path) == {}
    (tmp_path / schema.KEPT_BACK).write_text("[1, 2]")
    assert store.kept_back(tmp_path) == {}
    write_json(tmp_path / schema.KEPT_BACK, {"uri": "http://h", "trials": ["a"]})
    assert store.kept_back(tmp_path) == {"uri": "http://h", "trials": ["a"]}


def _create(uri: str, log: str, tag: str) -> None:
    with store.store_creation(uri):
        with open(log, "a") as f:
            f.write(f"{tag} in\n")
        time.sleep(0.3)
        with open(log, "a") as f:
            f.write(f"{tag} out\n")


@pytest.mark.slow  # two processes, each importing the harness and MLflow (seconds)
def test_two_processes_create_a_fresh_store_one_after_the_other(tmp_path):
    uri, log = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "log"
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_create, args=(uri, str(log), tag)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    lines = log.read_text().split()
    assert [p.exitcode for p in procs] == [0, 0] and len(lines) == 8
    assert lines[0::4] == lines[2::4] and lines[1::4] == ["in", "in"] and lines[3::4] == ["out", "out"]


def test_a_failed_creation_removes_the_half_made_store_and_a_full_disk_says_so(tmp_path):
    path = tmp_path / "mlflow.db"
    with pytest.raises(RuntimeError):
        with store.store_creation(f"sqlite:///{path}"):
            path.write_bytes(b"half")
            raise RuntimeError("migration failed")
    assert not path.exists()
    with pytest.raises(ResourceError, match=f"no space left on device for the MLflow store {path}"):
        with store.store_creation(f"sqlite:///{path}"):
            raise OSError(28, "No space left on device")


@pytest.mark.slow  # MLflow creates two stores through its migrations (seconds each)
def test_a_new_store_is_a_copy_of_an_empty_one_that_mlflow_opens_as_its_own(tmp_path, monkeypatch, caplog):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow puts the Default experiment's artifacts under the working folder
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    made_by_mlflow, seeded = tmp_path / "mlflow_made.db", tmp_path / "seeded.db"
    reference = MlflowClient(f"sqlite:///{made_by_mlflow}")
    store.seed_sqlite_store(f"sqlite:///{seeded}")
    (template,) = (tmp_path / "cache" / "mlflow").glob("empty-store-*.db")
    made_at = template.stat().st_mtime_ns
    caplog.set_level("INFO", logger="mlflow.store.db.utils")
    client = MlflowClient(f"sqlite:///{seeded}")
    assert [(e.experiment_id, e.name, e.artifact_location, e.lifecycle_stage) for e in client.search_experiments()] == [
        (e.experiment_id, e.name, e.artifact_location, e.lifecycle_stage) for e in reference.search_experiments()
    ]  # MLflow's own Default experiment, added on opening
    assert "Creating initial MLflow database tables" not in caplog.text  # no migration ran for the copy
    assert client.create_experiment("suite") == reference.create_experiment("suite")

    def tables(path):
        """Each table's and index's definition, its lines sorted (MLflow's migrations order a table's constraints
        differently from one run to the next), and the schema version."""
        with sqlite3.connect(path) as db:
            sql = db.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
            version = db.execute("SELECT version_num FROM alembic_version").fetchall()
        return sorted(
            (kind, name, sorted(line.strip(" ,") for line in text.splitlines())) for kind, name, text in sql
        ), version

    assert tables(seeded) == tables(made_by_mlflow)  # every table, index and the schema version MLflow's
    store.seed_sqlite_store(f"sqlite:///{seeded}")  # a store that exists is left as it is
    assert [e.name for e in client.search_experiments()] == ["suite", "Default"]
    store.seed_sqlite_store(f"sqlite:///{tmp_path / 'second.db'}")
    assert template.stat().st_mtime_ns == made_at  # made once per MLflow version
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(template))  # a cache that cannot be a folder: MLflow creates it
    store.seed_sqlite_store(f"sqlite:///{tmp_path / 'third.db'}")
    assert not (tmp_path / "third.db").exists() and not list(tmp_path.glob(".third.db*"))
