"""`harness slurm`: a suite's sweep as a SLURM batch script (execution.slurm), written and optionally submitted."""

from __future__ import annotations

from pathlib import Path

from harness.commands.common import load_suite_arg
from harness.core import environment
from harness.core.config import ConfigError
from harness.core.exit_codes import ExitCode


def cmd_slurm(args) -> int:
    from harness.execution import slurm
    from harness.planning.suite import expand

    suite = load_suite_arg(args)
    if suite.store is not None:
        raise ConfigError(
            f"{args.suite}: storage: {suite.storage}: a SLURM job's trials stop at checkpoints through a file on "
            f"shared storage (harness.trial.preemption); use a folder that every node mounts"
        )
    for flag in ("nodes", "cpus_per_node", "gpus_per_node", "max_requeues", "grace"):
        value, least = getattr(args, flag), 0 if flag in ("gpus_per_node", "max_requeues") else 1
        if value is not None and value < least:
            raise ConfigError(f"--{flag.replace('_', '-')}: {value}: must be at least {least}")
    trials = expand(suite, str(args.suite))
    alloc = slurm.plan_allocation(suite, trials, args.nodes, args.cpus_per_node, args.gpus_per_node)
    alloc.partition, alloc.account, alloc.time = args.partition, args.account, args.time
    alloc.grace_s, alloc.max_requeues = args.grace, args.max_requeues
    alloc.setup, alloc.sbatch, alloc.container = args.setup, args.sbatch, args.container
    if args.container and not Path(args.container).is_file():
        raise ConfigError(
            f"--container: {args.container}: no such image (build it: apptainer build harness.sif deploy/harness.def)"
        )
    run_args = [
        a for spec in args.plugin for a in ("--plugin", str(Path(spec).resolve()) if Path(spec).exists() else spec)
    ]
    env = {}
    data_dir = args.data_dir or environment.given("HARNESS_DATA_DIR")
    if data_dir:
        env["HARNESS_DATA_DIR"] = str(Path(data_dir).resolve())
    if args.tracking_uri:
        run_args += ["--tracking-uri", args.tracking_uri]
    script = slurm.write_script(suite.suite_dir, slurm.batch_script(Path(args.suite), suite, alloc, run_args, env))
    print(
        f"{script}\n  {alloc.nodes} node(s) x {alloc.cpus_per_node} CPU(s)"
        + (f", {alloc.gpus_per_node} GPU(s)" if alloc.gpus_per_node else "")
        + f" for {len(trials)} trial(s); USR1 {alloc.grace_s} s before the walltime stops them at a checkpoint, "
        f"then the job requeues itself (at most {alloc.max_requeues} times); progress: harness status {args.suite}"
    )
    if args.submit:
        print(f"submitted: job {slurm.submit(script)} (its log: {script.parent}/<job id>.out)")
    else:
        print(f"submit it: sbatch {script}")
    return ExitCode.DONE
