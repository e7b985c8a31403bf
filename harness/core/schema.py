"""The on-disk schema: the one home of every file and member name that a trial folder, a suite folder and a
storage folder hold, and of the record of facts beside the metrics in metrics.json. Readers and writers
(results.py, the trainer, tracking, analysis, tests) name files through this module only; a test fails when a
literal name appears elsewhere.

<storage>/
    mlflow.db               the default tracking store (sqlite)
    .pushed.json            an object store's local mirror: what was last pushed
<storage>/<suite>/
    driver.lock             the driver that owns the suite (harness.store.lock)
    ray.log                 Ray Tune's own messages during the sweep
    .tune/                  Ray Tune's experiment state
    status.txt              the last sweep's status table (an MLflow artifact of the parent run)
    drain                   present while the sweep stops at its trials' next checkpoints (harness.trial.preemption)
    slurm/                  `harness slurm`: job.sbatch, the jobs' logs, jobs.tsv (one line per start of a job)
    ensembles.json          the suite's deep ensembles, composed from finished trials
    tracking_kept_back.json the tracking URI that trials could not reach, and which ones
    report/                 `harness report`: index.html, tables, figures/
    .cache/                 what commands keep to skip work (verified.json, report.json); never results
<storage>/<suite>/<trial_id>/
    config.yaml             the resolved trial configuration
    history.csv             one row per epoch
    checkpoint.pt           the last end-of-epoch training state (resume point), read weights-only
    checkpoint.prev.pt      the one before it: the fallback when the last one cannot be read
    deepspeed/              DeepSpeed's per-rank state of the last two epochs (engine: deepspeed)
    deepspeed_config.json   the DeepSpeed configuration the trial ran with
    .ray_train/             Ray Train's own state (a trial with several workers)
    logits.npz              float16 head logits (N, M, K) and labels: test_*, and val_* with a validation split
    attempts.json           where each run of the trial (first start and every retry) ran, from which epoch
    error.txt               the traceback of the last failed run
    metrics.json            final metrics and the trial's facts; written last: its presence means "finished"
    eval/<set>/             `harness evaluate`: <part>.npz (logits, labels, severity), fingerprint.txt and
                            metrics.json (written last: its presence means the set is evaluated)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

# --- <storage>/
MLFLOW_DB = "mlflow.db"
PUSHED = ".pushed.json"

# --- <storage>/<suite>/
LOCK = "driver.lock"
RAY_LOG = "ray.log"
STATUS = "status.txt"
DRAIN = "drain"  # a sweep asked to stop at its trials' next checkpoints (harness.trial.preemption)
SLURM_DIR = "slurm"  # `harness slurm`: the batch script, its jobs' output and their record (harness.execution.slurm)
SLURM_SCRIPT = "job.sbatch"
SLURM_JOBS = "jobs.tsv"
ENSEMBLES = "ensembles.json"
KEPT_BACK = "tracking_kept_back.json"
REPORT_DIR = "report"
TUNE_DIR = ".tune"  # Ray Tune's experiment state of each sweep (never read back: the trial folders are the state)
SUITE_CACHE = ".cache"
VERIFIED = "verified.json"  # in .cache/: the files `harness run` read whole against their CRCs
REPORT_CACHE = "report.json"  # in .cache/: what `harness report` computed and wrote (analysis.cache)

# --- <suite>/report/
REPORT_PAGE = "index.html"
FIGURES_DIR = "figures"
SUMMARY_RAW = "summary_raw.csv"
MISSING = "missing.json"
NOT_IN_SUITE = "not_in_suite.json"
FIGURE_SUFFIXES = (".png", ".svg")
TABLE_SUFFIXES = (".md", ".csv", ".tex")

# --- <storage>/<suite>/<trial_id>/
CONFIG = "config.yaml"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
CHECKPOINTS = (CHECKPOINT, PREVIOUS)  # newest first
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_CONFIG = "deepspeed_config.json"
RAY_TRAIN_DIR = ".ray_train"
LOGITS = "logits.npz"
ATTEMPTS = "attempts.json"
ERROR = "error.txt"
STOPPED = "stopped.json"  # a study's ASHA stopped the trial at a rung (harness.execution.tune_run.StudyScheduler)
METRICS = "metrics.json"
CORRUPT_SUFFIX = ".corrupt"  # an unreadable checkpoint is kept aside under this suffix, never resumed from

# --- <trial_id>/eval/<set>/
EVAL_DIR = "eval"
EVAL_FINGERPRINT = "fingerprint.txt"  # the fingerprint of the images its parts were predicted on
ASIDE_SUFFIX = ".previous"  # eval/<set>.previous: the record a forced re-evaluation replaces once it completes
PART_SUFFIX = ".npz"  # eval/<set>/<part>.npz: a test set's parts are its splits (test, val), a corrupted set's
OOD_PART = "ood"  # its corruptions, an OOD set's one part this

# --- members of logits.npz: <split>_logits (float16 (N, M, K)) and <split>_labels (int64 (N,))
TEST, VAL = "test", "val"


def logits_member(split: str) -> str:
    return f"{split}_logits"


def labels_member(split: str) -> str:
    return f"{split}_labels"


TEST_LOGITS, TEST_LABELS = logits_member(TEST), labels_member(TEST)
VAL_LOGITS, VAL_LABELS = logits_member(VAL), labels_member(VAL)
LOGITS_MEMBERS = (TEST_LOGITS, TEST_LABELS)  # what a finished trial's logits.npz must hold

# --- members of an evaluation part (eval/<set>/<part>.npz)
PART_LOGITS = "logits"  # float16 head logits (N, M, K)
PART_LABELS = "labels"  # int64 (N,); absent for an OOD part
PART_SEVERITY = "severity"  # int (N,): a corrupted part's severity per image


@dataclass
class TrialFacts:
    """What metrics.json records about a trial beside its metrics: identity, data, where it ran. Never logged as
    MLflow metrics (the cost figures are metrics: harness.metrics, group "cost")."""

    trial_id: str
    epochs: int
    test_images: int
    train_images: int
    device: str
    device_name: str
    data_source: str
    engine: str
    workers: int
    nodes: list[str] = field(default_factory=list)  # every node that ran it, in order
    inference_batch: int | None = None  # the batch of the inference-cost measurement (None: not measured)
    ensemble_average: str = "probabilities"  # the rule the metrics combined the heads with

    def record(self) -> dict:
        return asdict(self)


FACTS = tuple(f.name for f in fields(TrialFacts))  # keys of metrics.json that are facts, not metrics
