import fcntl
import gc
import os
import shutil
import signal
import tempfile
from pathlib import Path

import forked
import pytest

# Nothing heavy is imported here: with xdist this file is also the controller's, which only hands out files and
# gathers reports (torch, MLflow and the harness cost it seconds at start and at exit, measured in the fast lane).
# The test processes import them in pytest_configure.

# Ray keeps its sessions, and its record of the "current" cluster, under $RAY_TMPDIR/ray: the tests get a
# folder of their own (short: Ray's socket paths must fit in 107 bytes), so they never join, or are joined
# by, a user's Ray or another test run's.
RAY_TMPDIR = tempfile.mkdtemp(prefix="hr-", dir="/tmp")
os.environ["RAY_TMPDIR"] = RAY_TMPDIR
os.environ["HARNESS_CACHE_DIR"] = os.path.join(RAY_TMPDIR, "cache")  # data fingerprints: not the user's cache
os.environ["HARNESS_INFERENCE_S"] = "0"  # the inference-speed measurement: one batch, no warm-up, per trial
# One torch thread per test process (and the subprocesses it starts): the lanes run two pytest workers on two cores,
# and torch's default of a thread per core in each oversubscribed them (the fast lane: 129 s -> 63 s, measured here).
os.environ["OMP_NUM_THREADS"] = "1"


def pytest_configure(config):
    if not hasattr(config, "workerinput") and config.getoption("numprocesses", None):
        return  # xdist's controller runs no test
    import torch

    from helpers import harness_env

    torch.set_num_threads(1)
    # `harness ARGS` is forked (tests/forked.py) where its environment is a command's default one (TESTS_NO_FORK=1:
    # never)
    forked.base_env = None if os.environ.get("TESTS_NO_FORK") else harness_env()


def pytest_collection_finish(session):
    # What collection imported lives until the process ends: frozen, it is left out of every garbage collection
    # (~0.5 s each here over torch, MLflow, Ray and matplotlib; pytest alone runs five at exit).
    gc.collect()
    gc.freeze()


# Each lane's longest files, longest first (the slow lane's minutes in CI, measured at 91947bd; then the fast lane's
# seconds, measured at 87a7bc0). `--dist loadfile` hands files to the two workers in collection order as each frees
# up: the long ones first leave the short ones to even out the end, where a long file collected last would keep one
# worker busy while the other idles.
LONGEST_FIRST = [
    "planning/test_tuning.py",
    "engines/test_distributed.py",
    "system/test_combinations.py",
    "store/test_object_store.py",
    "tracker/test_tracking_server.py",
    "execution/test_sweep.py",
    "execution/test_cluster.py",
    "core/test_plugins.py",
    "store/test_trial_folder.py",
    "execution/test_slurm.py",
    "tracker/test_tracking.py",
    "evaluation/test_evaluate.py",
    "system/test_safety.py",
    # the fast lane's (of the files above, test_plugins and test_safety are its longest too)
    "bench/test_bench.py",
    "test_layout.py",
    "trial/test_trainer.py",
    "analysis/test_report.py",
    "methods/test_methods.py",
    "tracker/test_mlflow_mapping.py",
    "tracker/test_store.py",
]


def pytest_collection_modifyitems(config, items):
    """Tests on the real CIFAR-100 are slow by nature: the fast lane (`-m "not slow"`) leaves them out. The
    longest files run first (``LONGEST_FIRST``)."""
    for item in items:
        if "real_data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    here = Path(__file__).parent
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.relative_to(here).as_posix(), len(rank)))  # stable: else as found


def pytest_runtest_setup(item):
    # the slow lane's ~130 commands repay each worker's fork server's imports; the fast lane's few do not
    forked.in_a_slow_test = item.get_closest_marker("slow") is not None


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(RAY_TMPDIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_plugin_outlives_its_test():
    """What a test loads in this process (`cli` with a suite's plugins, a plugin's own checks) is unloaded after it,
    as a command's process would end: the next test's registries see none of it."""
    from harness.core import plugins

    loaded_before = set(plugins._loaded)
    yield
    for spec in set(plugins._loaded) - loaded_before:
        plugins.unload(plugins._loaded[spec])


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real CIFAR-100 folder. In CI (.ci/run sets HARNESS_DATA_DIR) these tests must run, never skip."""
    root = os.environ.get("HARNESS_DATA_DIR")
    if not root or not (Path(root) / "cifar100" / "train.npz").exists():
        pytest.fail(
            "real-data test: set HARNESS_DATA_DIR to a folder holding cifar100/train.npz "
            "(.ci/run points it at ../shared/data)"
        )
    return Path(root)


@pytest.fixture
def cluster():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # trials can only run on the workers
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    yield c, workers
    c.shutdown()


@pytest.fixture
def mlflow_server(tmp_path):
    from helpers import free_port, start_server

    port = free_port()
    proc = start_server(tmp_path, port)
    yield f"http://127.0.0.1:{port}"
    os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def said_by():
    """``said_by(name)`` -> the list of messages logger ``name`` emits from then on (INFO and above), in order."""
    import logging

    attached = []

    def collect(name: str) -> list[str]:
        messages: list[str] = []

        class Collect(logging.Handler):
            def emit(self, record):
                messages.append(record.getMessage())

        logger, handler = logging.getLogger(name), Collect()
        attached.append((logger, handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        return messages

    yield collect
    for logger, handler, level in attached:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="session")
def finished(tmp_path_factory, worker_id):
    """Four finished trials (vanilla, widths 1 to 4; 2 epochs each), trained once per test run by `harness run`
    (the first xdist worker to ask trains them, under a lock the others wait on); tests work on
    ``helpers.copy_of``, never on these."""
    from helpers import GRID, harness, write_suite

    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if worker_id != "master" else shared  # the folder the workers' own folders are in
    tmp = shared / "finished"
    with open(shared / "finished.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (tmp / "trained").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            proc = harness("run", write_suite(tmp, grid=GRID))
            assert proc.returncode == 0, proc.stderr[-3000:]
            (tmp / "trained").touch()
    return tmp
