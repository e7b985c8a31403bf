"""MLflow tracking, reconciled from the trial folders: the tracker (what to send, when, in batches).

The trial folders are the source of truth; MLflow is a mirror of them. ``Tracker.sync_trial``
sends whatever a trial folder holds that the store has not seen yet (params once, new history
epochs, final metrics and artifacts); what the store holds is read from the store itself (runs
tagged with the suite and trial id, how far each was sent in its tags), so a deleted, replaced
or moved store is brought up to date and never doubled.
A tracking outage therefore never loses anything and never stops training: what could not be
sent is sent by the next ``harness run`` or by ``harness sync``.

One parent run per sweep, one child run per trial (params = the flattened trial config; tags =
method, width, M, seed, trial id; per-epoch metrics; final metrics; result files as artifacts).
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from harness.core import schema
from harness.store.errors import CorruptFile, ResourceError
from harness.store.files import write_json
from harness.store.trial_folder import TrialFolder
from harness.tracker.mlflow_mapping import (
    ARTIFACTS,
    EPOCHS_TAG,
    EVALUATIONS_TAG,
    FINAL_TAG,
    NODES_TAG,
    REPORT_TAG,
    ROLE_TAG,
    SUITE_TAG,
    WORKERS_TAG,
    epoch_metrics,
    evaluation_metrics,
    final_metrics,
    quoted,
    suite_params,
    summary_metrics,
    trial_params,
    trial_tags,
)
from harness.tracker.store import (
    check_answers,
    check_store,
    kept_back,
    seed_sqlite_store,
    store_creation,
    suite_tracking_uri,
)

logger = logging.getLogger(__name__)

PAGE = 50_000  # search_runs' largest page


def all_runs(client, experiment_ids: list[str], filter_string: str = "") -> list:
    """Every run matching the filter, page after page (``search_runs`` returns one page: 1,000 by default)."""
    found, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=PAGE, page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return found


class Tracker:
    """The suite's runs in one MLflow experiment. What the store holds is read from the store (its runs tagged with
    the suite and the trial id, their progress in tags), never assumed: a deleted or new store is sent everything,
    a moved storage folder finds its runs again."""

    def __init__(self, uri: str, experiment: str, suite_name: str, suite_dir: Path, artifact_root: str | None = None):
        # A server that does not answer should cost seconds, not MLflow's default minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        check_store(uri)
        self.uri, self.experiment, self.suite_name, self.artifact_root = uri, experiment, suite_name, artifact_root
        self.suite_dir = Path(suite_dir)
        self._client = None
        self._experiment_id: str | None = None
        self.suite_params: dict[str, str] = {}  # logged to the parent run when it is created
        self.description = ""  # the suite's: the experiment's description in the MLflow UI
        self._parent: str | None = None
        self._runs: dict[str, dict] | None = None  # trial id -> {"run_id", "epochs", "final", "evaluations"}

    @property
    def client(self):
        """The MLflow client, made on first use: a busy or unreachable store is then an outage like any other."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            check_answers(self.uri)  # a database that is down: seconds, not MLflow's ~100 s of retries
            with store_creation(self.uri):
                seed_sqlite_store(self.uri)  # a new sqlite store: a copy of an empty one, not MLflow's migrations
                client = MlflowClient(self.uri)
                client.search_experiments(max_results=1)  # creates (or migrates) a sqlite store's tables
            self._client = client
        return self._client

    def connect(self) -> None:
        """Create (or migrate) the store now, before the suite is locked: a full disk stops the command here (exit
        3, nothing half-made); a busy or unreachable store is an outage, tried again at each send."""
        try:
            self.client
        except ResourceError:
            raise
        except Exception as err:
            warn(
                f"tracking: could not reach {self.uri} ({type(err).__name__}: {str(err)[:200]}); training goes on, "
                f"and what it could not send is sent later (`harness sync`, or the same `harness run`)"
            )

    @classmethod
    def for_suite(cls, suite, tracking_uri: str | None = None) -> "Tracker":
        """The suite's tracker: at ``tracking_uri`` if given; else where trials were kept back from in an outage
        (they are sent where they were meant to go); else at ``suite_tracking_uri``."""
        kept = kept_back(suite.suite_dir) if tracking_uri is None else {}
        if kept.get("uri"):
            count = len(kept.get("trials", []))
            logger.info(f"tracking: {count} trial(s) were kept back from {kept['uri']}: sent there")
        tracker = cls(
            kept.get("uri") or suite_tracking_uri(suite, tracking_uri),
            suite.tracking.experiment or suite.name,
            suite.name,
            suite.suite_dir,
            artifact_root=f"{suite.store.uri}/mlartifacts" if suite.store else None,
        )
        tracker.suite_params = suite_params(suite)
        tracker.description = suite.description
        return tracker

    # --- what the store holds
    def experiment_id(self, create: bool = True) -> str | None:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is not None and exp.lifecycle_stage == "active":
                self._experiment_id = exp.experiment_id
            elif exp is not None:  # deleted in the UI: restored, its runs are this suite's mirror
                self.client.restore_experiment(exp.experiment_id)
                self._experiment_id = exp.experiment_id
            elif create:
                # Stores the harness opens itself (a file, sqlite, a database) keep artifacts beside the results
                # (in the object store, if that is the storage), never in the working folder; a server decides
                # for itself (its --artifacts-destination).
                local = not self.uri.startswith(("http:", "https:", "databricks"))
                root = self.artifact_root or (self.suite_dir.parent.resolve() / "mlartifacts").as_uri()
                location = f"{root}/{self.experiment}" if local else None
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=location, tags=self.experiment_tags()
                )
                return self._experiment_id
            if self._experiment_id is not None:
                for key, value in self.experiment_tags().items():  # an older experiment: its page set as well
                    if exp.tags.get(key) != value:
                        self.client.set_experiment_tag(self._experiment_id, key, value)
        return self._experiment_id

    def experiment_tags(self) -> dict[str, str]:
        """What MLflow 3's UI reads of an experiment: its kind (model training, so the page opens on its training
        runs, not on the GenAI overview of traces) and its description (the suite's)."""
        tags = {"mlflow.experimentKind": "custom_model_development"}
        if self.description:
            tags["mlflow.note.content"] = self.description
        return tags

    def runs(self) -> dict[str, dict]:
        """The suite's trial runs in the store, by trial id (one search, paged; kept up to date as runs are sent).
        Of several runs of one trial (a store written by older versions), the most advanced is used."""
        if self._runs is None:
            self._runs = {}
            experiment = self.experiment_id(create=False)
            where = f"tags.`{SUITE_TAG}` = {quoted(self.suite_name)}"
            for run in all_runs(self.client, [experiment], where) if experiment else []:
                tags = run.data.tags
                if tags.get(ROLE_TAG) == "sweep":
                    self._parent = self._parent or run.info.run_id
                    continue
                tid = tags.get("trial_id")
                seen = {
                    "run_id": run.info.run_id,
                    "epochs": int(tags.get(EPOCHS_TAG, 0)),
                    "final": tags.get(FINAL_TAG) == "1" or run.info.status in ("FINISHED", "FAILED"),
                    "evaluations": json.loads(tags.get(EVALUATIONS_TAG, "[]")),
                    "nodes": tags.get(NODES_TAG),
                }
                best = self._runs.get(tid)
                if tid and (best is None or (seen["final"], seen["epochs"]) > (best["final"], best["epochs"])):
                    self._runs[tid] = seen
        return self._runs

    def forget(self, trial_ids: list[str]) -> None:
        """Before trials are trained again from scratch (--restart): their runs are deleted, new ones replace them."""
        runs = self.runs()
        for tid in trial_ids:
            if tid in runs:
                self.client.delete_run(runs.pop(tid)["run_id"])

    def tag_trials(self, tags: dict[str, dict[str, str]]) -> None:
        """Tags on trials' runs (trial id -> {key: value}): a study's phase and selection, known once it ran."""
        from mlflow.entities import RunTag

        if not tags:  # no study: not even the search for the runs
            return
        runs = self.runs()
        for tid, values in tags.items():
            if tid in runs:
                self.client.log_batch(runs[tid]["run_id"], tags=[RunTag(k, v) for k, v in values.items()])

    def parent_run_id(self, create: bool = True) -> str | None:
        """The sweep's parent run (found by its tags; created on first use unless ``create`` is False)."""
        if self._parent is None and self._runs is None:  # the parent alone: not the suite's thousands of runs
            experiment = self.experiment_id(create=False)
            where = f"tags.`{SUITE_TAG}` = {quoted(self.suite_name)} and tags.`{ROLE_TAG}` = 'sweep'"
            found = all_runs(self.client, [experiment], where) if experiment else []
            self._parent = found[0].info.run_id if found else None
        if self._parent is None:
            self.runs()
        if self._parent is None and create:
            run = self.client.create_run(
                self.experiment_id(),
                run_name=self.suite_name,
                tags={SUITE_TAG: self.suite_name, ROLE_TAG: "sweep"},
            )
            self._parent = run.info.run_id
            from mlflow.entities import Param

            params = [Param(k, v) for k, v in sorted(self.suite_params.items())]
            _log_batches(self.client, self._parent, params=params)
        return self._parent

    def sync_trial(self, trial_dir: Path, failed: bool = False) -> None:
        """Send what the trial folder holds and the store lacks. Raises if the tracking store is unreachable."""
        from mlflow.entities import Metric, Param, RunTag

        trial_dir = Path(trial_dir)
        folder = TrialFolder(trial_dir)
        if not (trial_dir / schema.CONFIG).exists():
            return  # not started yet
        config = folder.config()  # CorruptFile: a bad trial folder, not a tracking outage
        tid = config["trial_id"]
        state = self.runs().get(tid)
        if state is not None and state["final"]:
            self._send_evaluations(folder, state)
            return
        if state is None:
            tags = trial_tags(config, self.suite_name, self.parent_run_id())
            run_id = self.client.create_run(self.experiment_id(), run_name=tid, tags=tags).info.run_id
            _log_batches(self.client, run_id, params=[Param(k, v) for k, v in trial_params(config).items()])
            state = self.runs()[tid] = {"run_id": run_id, "epochs": 0, "final": False, "evaluations": []}
        run_id = state["run_id"]
        nodes = ",".join(folder.nodes())  # where the trial (and each retry) ran
        if nodes and state.get("nodes") != nodes:
            self.client.set_tag(run_id, NODES_TAG, nodes)
            state["nodes"] = nodes
        now = int(time.time() * 1000)
        new_rows = [r for r in folder.history() if int(r["epoch"]) > state["epochs"]]
        if new_rows:
            metrics = [Metric(k, v, now, epoch) for k, v, epoch in epoch_metrics(new_rows)]
            epochs = int(new_rows[-1]["epoch"])  # the progress tag goes with the last batch of its metrics
            _log_batches(self.client, run_id, metrics=metrics, last_tags=[RunTag(EPOCHS_TAG, str(epochs))])
            state["epochs"] = epochs
        if folder.is_finished():
            final = folder.metrics()
            step = int(config.get("epochs", 0))
            numbers = [Metric(k, v, now, step) for k, v in final_metrics(final).items()]
            for name in ARTIFACTS:
                if (trial_dir / name).exists():
                    self.client.log_artifact(run_id, str(trial_dir / name))
            tags = [RunTag(FINAL_TAG, "1")]
            if "workers" in final:  # how many workers trained it: a fact about the run, so a tag
                tags.append(RunTag(WORKERS_TAG, str(final["workers"])))
            _log_batches(self.client, run_id, metrics=numbers, last_tags=tags)
            self.client.set_terminated(run_id, "FINISHED")
            state["final"] = True
            self._send_evaluations(folder, state)
        elif failed and (trial_dir / schema.ERROR).exists():
            self.client.log_artifact(run_id, str(trial_dir / schema.ERROR))
            self.client.set_tag(run_id, FINAL_TAG, "1")
            self.client.set_terminated(run_id, "FAILED")
            state["final"] = True

    def _send_evaluations(self, folder: TrialFolder, state: dict) -> None:
        """The metrics of evaluation sets (`harness evaluate`) not sent yet, at the trial's last epoch."""
        from mlflow.entities import Metric, RunTag

        from harness.evaluation.kinds import record_problem

        sent = set(state["evaluations"])
        new = {k: r for k, r in folder.evaluations(record_problem).items() if k not in sent}
        if not new:
            return
        now, step = int(time.time() * 1000), int(state["epochs"])
        metrics = [Metric(k, v, now, step) for r in new.values() for k, v in sorted(evaluation_metrics(r).items())]
        evaluations = sorted(sent | set(new))
        _log_batches(
            self.client, state["run_id"], metrics=metrics, last_tags=[RunTag(EVALUATIONS_TAG, json.dumps(evaluations))]
        )
        state["evaluations"] = evaluations

    def finish_parent(self, artifacts: list[Path], status: str) -> None:
        run_id = self.parent_run_id()
        for path in artifacts:
            if Path(path).exists():
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status)

    def sync(self, trial_dirs: list[Path], failed: set[str] = frozenset()) -> list[str]:
        """Sync every trial; returns the trial ids that could not be sent (the store is down). A trial folder
        with an unreadable file is skipped with a warning: it says nothing about the tracking store."""
        pending = []
        for i, d in enumerate(trial_dirs):
            state = TrialFolder(d).state()
            if state.state == "corrupt":
                warn(
                    f"tracking: trial {Path(d).name} skipped, its folder has an unreadable file ({state.detail}); "
                    f"`harness run` retrains it"
                )
                continue
            try:
                self.sync_trial(d, failed=Path(d).name in failed)
            except CorruptFile as err:
                warn(
                    f"tracking: trial {Path(d).name} skipped, its folder has an unreadable file ({err}); "
                    f"`harness run` retrains it, then it is sent"
                )
            except Exception as err:  # any failure of the store: keep the rest for later
                pending = [Path(x).name for x in trial_dirs[i:]]
                warn(
                    f"tracking: could not reach {self.uri} ({type(err).__name__}: {str(err)[:200]}); "
                    f"{len(pending)} trial(s) kept for later: run `harness sync` or the same `harness run`"
                )
                break
        record = self.suite_dir / schema.KEPT_BACK
        if pending:
            write_json(record, {"uri": self.uri, "trials": pending})
        elif kept_back(self.suite_dir).get("uri") == self.uri:
            record.unlink(missing_ok=True)
        return pending


class BackgroundTracker:
    """Sends trial updates from a single background thread, so a slow or dead tracking store
    never blocks the sweep. After a failure it stays quiet until the final ``Tracker.sync``."""

    def __init__(self, tracker: Tracker | None, fetch: Callable[[Path], object] | None = None):
        self.tracker, self.fetch = tracker, fetch  # fetch: bring a trial folder up to date first (object store)
        self.pool = ThreadPoolExecutor(max_workers=1) if tracker else None
        self.down = False

    def update(self, trial_dir: Path) -> None:
        if self.pool is not None and not self.down:
            self.pool.submit(self._sync, trial_dir)

    def _sync(self, trial_dir: Path) -> None:
        if self.down:
            return
        if self.fetch is not None:
            try:
                self.fetch(trial_dir)
            except Exception as err:  # the end of the sweep fetches everything again
                warn(f"storage: could not fetch {trial_dir.name} ({type(err).__name__}: {str(err)[:200]})")
        try:
            self.tracker.sync_trial(trial_dir)
        except CorruptFile as err:
            warn(f"tracking: trial {trial_dir.name} skipped for now ({err})")
        except Exception as err:
            self.down = True
            warn(
                f"tracking: could not reach {self.tracker.uri} ({type(err).__name__}); training goes on, "
                f"and the results will be sent at the end of the sweep or by `harness sync`"
            )

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def warn(msg: str) -> None:
    logger.warning(msg)


def _log_batches(client, run_id: str, metrics=(), params=(), last_tags=()) -> None:
    """log_batch within MLflow's limits (1,000 metrics, 100 params per call); ``last_tags`` go with the last call,
    so a tag saying what was sent is written with (never before) the last of it."""
    metrics, params = list(metrics), list(params)
    calls = [{"params": params[i : i + 100]} for i in range(0, len(params), 100)]
    calls += [{"metrics": metrics[i : i + 1000]} for i in range(0, len(metrics), 1000)]
    if last_tags:
        calls = calls or [{}]
        calls[-1] = {**calls[-1], "tags": list(last_tags)}
    for call in calls:
        client.log_batch(run_id, **call)


def log_report(suite, report_dir: Path, tracking_uri: str | None = None, summary=None) -> None:
    """Attach a report folder (after it is written) and its aggregated results to the sweep's parent run (if
    the store has one); warn on an outage."""
    import hashlib

    tracker = Tracker.for_suite(suite, tracking_uri)
    try:
        parent = tracker.parent_run_id(create=False)
        if parent is None:
            return
        values = summary_metrics(summary) if summary is not None else {}
        files = sorted((str(p.relative_to(report_dir)), p.stat().st_size) for p in report_dir.rglob("*") if p.is_file())
        digest = hashlib.sha256(json.dumps([sorted(values.items()), files]).encode()).hexdigest()
        if tracker.client.get_run(parent).data.tags.get(REPORT_TAG) == digest:  # the same report: sent already
            print(f"report unchanged in MLflow run {parent} ({tracker.uri})")
            return
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in sorted(values.items())]
        tracker.client.log_artifacts(parent, str(report_dir), artifact_path=schema.REPORT_DIR)
        _log_batches(tracker.client, parent, metrics=metrics, last_tags=[RunTag(REPORT_TAG, digest)])
        print(f"report logged to MLflow run {parent} ({tracker.uri})")
    except Exception as err:
        warn(f"tracking: could not log the report to {tracker.uri} ({type(err).__name__}: {str(err)[:200]})")
