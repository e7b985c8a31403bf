"""`harness slurm`: a suite's sweep as a SLURM batch script, and the record its jobs keep (docs/clusters.md).

The script starts a Ray of its own across the allocation (`ray start --head --block` here, `srun ray start --block`
on the other nodes) with ports and a temporary folder derived from the job id, runs `harness run SUITE --address`
on it, and stops only that Ray. Not `ray symmetric-run`: it refuses to start on a node where any Ray runs (another
job's) and ends with a bare `ray stop`, which stops every Ray of the user on the node.

SLURM's warning before the walltime (``--signal=B:USR1@grace``) makes the script's trap write the suite's drain
file (harness.trial.preemption): the trials stop at their next checkpoint, `harness run` exits with
ExitCode.PREEMPTED, and the script requeues its job, at most ``max_requeues`` times; the requeued job resumes
the same sweep. Each start and end of a job is a line of ``<storage>/<suite>/slurm/jobs.tsv``, which
`harness status` summarises.
"""

from __future__ import annotations

import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.core import schema
from harness.core.config import ConfigError
from harness.core.exit_codes import ExitCode

JOB_FIELDS = ("job", "restart", "time", "event", "detail")  # the columns of slurm/jobs.tsv


@dataclass
class Allocation:
    """What the batch script asks SLURM for, and how it runs."""

    nodes: int = 1
    cpus_per_node: int = 1
    gpus_per_node: int = 0
    partition: str | None = None
    account: str | None = None
    time: str | None = None  # the walltime, as sbatch's --time takes it (e.g. 1-00:00:00)
    grace_s: int = 600  # USR1 this long before the walltime: one epoch and its checkpoint must fit
    max_requeues: int = 3
    setup: list[str] = field(default_factory=list)  # shell lines that make the environment (modules, conda, ...)
    sbatch: list[str] = field(default_factory=list)  # further #SBATCH options of the site (--qos, --constraint, ...)
    container: str | None = None  # an Apptainer image (deploy/harness.def) that ray and harness run in


def plan_allocation(suite, trials, nodes: int | None = None, cpus: int | None = None, gpus: int | None = None):
    """Nodes, CPUs and GPUs per node from the suite's resources and its grid: every trial that may run at once
    (its `concurrency`, else the whole grid) gets its `resources` on one of the nodes; flags override."""
    nodes = nodes or 1
    workers = max((t.workers_per_trial for t in trials), default=1)
    at_once = min(suite.concurrency or len(trials), len(trials)) or 1
    per_node = math.ceil(at_once / nodes)
    need_gpus = math.ceil(per_node * workers * suite.resources.gpus - 1e-9)
    need_cpus = math.ceil(per_node * workers * suite.resources.cpus - 1e-9)
    return Allocation(
        nodes=nodes,
        cpus_per_node=cpus or max(1, need_cpus),
        gpus_per_node=gpus if gpus is not None else min(need_gpus, 8),  # 8: the most GPUs a node has
    )


def default_setup() -> list[str]:
    """The environment `harness slurm` runs in, made again in the job: its Python's bin folder first on PATH."""
    return [
        "# the Python environment `harness slurm` ran in; replace with your site's (module load ..., conda activate"
        " ..., source venv/bin/activate)",
        f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH",
    ]


def _ray_ports(base: str) -> str:
    """`ray start` options that fix every port a Ray node binds to, from ``base`` on: two jobs on one node never
    share one (the worker ports are drawn free by Ray)."""
    ports = {
        "dashboard-agent-listen-port": 2,
        "dashboard-agent-grpc-port": 3,
        "runtime-env-agent-port": 4,
        "metrics-export-port": 5,
        "node-manager-port": 6,
        "object-manager-port": 7,
    }
    if _has_ray_client():
        ports["ray-client-server-port"] = 1
    return " ".join(f"--{name}=$(({base} + {offset}))" for name, offset in ports.items())


def _has_ray_client() -> bool:
    """Whether this Ray has its client server (ray[client]): `ray start` refuses its port otherwise."""
    try:
        from ray._private.utils import get_ray_client_dependency_error

        return get_ray_client_dependency_error() is None
    except ImportError:
        return False


def batch_script(
    suite_file: Path,
    suite,
    alloc: Allocation,
    run_args: list[str],
    env: dict[str, str],
) -> str:
    """The sbatch script (readable: a researcher edits its environment section for their site). Long: it is the
    script's template, read top to bottom as the job runs it."""
    suite_dir = suite.suite_dir.resolve()
    slurm_dir = suite_dir / schema.SLURM_DIR
    q = shlex.quote
    options = [
        f"--job-name=harness-{suite.name}",
        f"--nodes={alloc.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={alloc.cpus_per_node}",
        *([f"--gres=gpu:{alloc.gpus_per_node}"] if alloc.gpus_per_node else []),
        *([f"--partition={alloc.partition}"] if alloc.partition else []),
        *([f"--account={alloc.account}"] if alloc.account else []),
        *([f"--time={alloc.time}"] if alloc.time else []),
        f"--output={slurm_dir}/%j.out",
        "--open-mode=append",  # a requeued job appends to its log
        "--requeue",
        f"--signal=B:USR1@{alloc.grace_s}",
        *alloc.sbatch,
    ]
    sbatch = "\n".join(f"#SBATCH {o}" for o in options)
    exports = "\n".join(f"export {k}={q(v)}" for k, v in env.items())
    setup = "\n".join(alloc.setup or ([] if alloc.container else default_setup()))
    binds = ",".join(
        dict.fromkeys(
            [str(suite.results_root.resolve()), *([env["HARNESS_DATA_DIR"]] if "HARNESS_DATA_DIR" in env else [])]
        )
    )
    in_env = f"apptainer exec --nv --bind {binds} {Path(alloc.container).resolve()}" if alloc.container else ""
    run = " ".join(q(a) for a in ["harness", "run", str(suite_file.resolve()), *run_args])
    tsv = q(str(slurm_dir / schema.SLURM_JOBS))
    return f"""#!/bin/bash
# The sweep of suite `{suite.name}` on SLURM, written by `harness slurm {suite_file}`.
# Edit the environment section for your site; the rest starts and stops the job's own Ray, runs the sweep, and
# requeues the job when SLURM's warning (USR1, {alloc.grace_s} s before the walltime) stopped it at its checkpoints.
{sbatch}
set -uo pipefail

# --- the environment
{setup}
export RAY_AUTH_MODE=disabled  # Ray's token would have to reach every node; the job's Ray listens on its own ports
{exports}
# what ray and harness run in: this environment (""), or a container: apptainer exec --nv --bind /scratch harness.sif
IN_ENV={q(in_env)}

SUITE_DIR={q(str(suite_dir))}
MAX_REQUEUES={alloc.max_requeues}
RESTART=${{SLURM_RESTART_COUNT:-0}}
RAY_TMP=/tmp/harness-ray-$SLURM_JOB_ID  # this job's Ray (sessions, sockets, logs); short: sockets live there
RAY_PORT=$((20000 + SLURM_JOB_ID % 2000 * 20))  # this job's 20 ports: two jobs on one node never share one
HEAD_IP=${{HARNESS_HEAD_IP:-$($IN_ENV python -c 'import ray.util; print(ray.util.get_node_ip_address())')}}
mkdir -p {q(str(slurm_dir))}
record() {{ printf '%s\\t%s\\t%s\\t%s\\t%s\\n' "$SLURM_JOB_ID" "$RESTART" "$(date -Iseconds)" "$1" "$2" >> {tsv}; }}
record start "nodes $SLURM_JOB_NODELIST, Ray at $HEAD_IP:$RAY_PORT"

# --- SLURM's warning: the trials stop at their next checkpoint (harness.trial.preemption)
drain() {{
    echo "USR1: the trials stop at their next checkpoint"
    echo "USR1 to job $SLURM_JOB_ID" > "$SUITE_DIR/{schema.DRAIN}"
}}
trap drain USR1

# --- the job's own Ray: its head here, a worker on each other node
RAY_OPTIONS="--temp-dir=$RAY_TMP --num-cpus=$SLURM_CPUS_PER_TASK --include-dashboard=false {_ray_ports("RAY_PORT")}"
$IN_ENV ray start --head --block --node-ip-address="$HEAD_IP" --port=$RAY_PORT $RAY_OPTIONS &
RAY_PIDS=$!
stop_ray() {{ kill -TERM $RAY_PIDS 2>/dev/null; wait $RAY_PIDS 2>/dev/null; rm -rf "$RAY_TMP"; }}
for _ in $(seq 120); do [ -e "$RAY_TMP/ray_current_cluster" ] && break; sleep 1; done  # the head is up
if [ "$SLURM_JOB_NUM_NODES" -gt 1 ]; then  # SLURMD_NODENAME: this (the batch) node, as SLURM names it
    srun --overlap --nodes=$((SLURM_JOB_NUM_NODES - 1)) --ntasks=$((SLURM_JOB_NUM_NODES - 1)) \\
        --exclude="$SLURMD_NODENAME" $IN_ENV ray start --block --address="$HEAD_IP:$RAY_PORT" $RAY_OPTIONS &
    RAY_PIDS="$RAY_PIDS $!"
fi

# --- the sweep (a requeued job resumes it: finished trials stay finished, partial ones resume)
$IN_ENV {run} --address "$HEAD_IP:$RAY_PORT" &
DRIVER=$!
while true; do wait $DRIVER; RC=$?; kill -0 $DRIVER 2>/dev/null || break; done  # a trap interrupts wait
stop_ray
if [ $RC -eq {int(ExitCode.PREEMPTED)} ]; then
    if [ "$RESTART" -lt "$MAX_REQUEUES" ]; then
        record requeued "$((RESTART + 1)) of at most $MAX_REQUEUES"
        scontrol requeue "$SLURM_JOB_ID"
        exit $RC
    fi
    record "requeue limit" "stopped at checkpoints after $RESTART requeues: sbatch this script again to go on"
else
    record end "harness run exited with $RC"
fi
exit $RC
"""


def write_script(suite_dir: Path, text: str) -> Path:
    from harness.store.files import write_text

    path = suite_dir / schema.SLURM_DIR / schema.SLURM_SCRIPT
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
    path.chmod(0o755)
    return path


def submit(script: Path) -> str:
    """``sbatch`` the script (the submitting shell's environment exported, sbatch's default) -> the job id."""
    import shutil
    import subprocess

    if shutil.which("sbatch") is None:
        raise ConfigError(f"--submit: no `sbatch` on PATH here; the script is written: sbatch {script}")
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ConfigError(f"sbatch {script}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def jobs(suite_dir: Path) -> list[dict[str, str]]:
    """slurm/jobs.tsv's lines, oldest first (none without it)."""
    path = suite_dir / schema.SLURM_DIR / schema.SLURM_JOBS
    if not path.exists():
        return []
    return [dict(zip(JOB_FIELDS, line.split("\t"))) for line in path.read_text().splitlines() if line.strip()]


def jobs_summary(suite_dir: Path) -> str | None:
    """One line for `harness status`: the suite's SLURM jobs, how often they were requeued, the last event."""
    rows = jobs(suite_dir)
    if not rows:
        return None
    starts = [r for r in rows if r["event"] == "start"]
    requeues = sum(r["event"] == "requeued" for r in rows)
    last = rows[-1]
    return (
        f"SLURM: {len({r['job'] for r in starts})} job(s), {len(starts)} start(s), {requeues} requeue(s); last: job "
        f"{last['job']} {last['event']} {last['detail']} at {last['time']} ({suite_dir / schema.SLURM_DIR})"
    )
