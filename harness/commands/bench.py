"""`harness bench`: the loader's and the training step's speed, or a suite's shapes into the rate table."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from harness.commands.common import load_suite_arg, trial_config
from harness.core.exit_codes import ExitCode
from harness.core.yaml_files import parse_overrides
from harness.trial.catalog import build_config

logger = logging.getLogger(__name__)


def _bool_or_mode(value: str):
    return {"true": True, "false": False}.get(value.lower(), value)


def cmd_bench_suite(args) -> int:
    """`harness bench --suite`: every shape of a suite, alone and k at once, into the card's rate table."""
    from harness.bench.packed import measure_shapes
    from harness.bench.rates import Shape, card_slug, plan_packing, rates_dir, write_rates
    from harness.planning.suite import expand

    suite = load_suite_arg(argparse.Namespace(suite=args.suite, data_dir=args.data_dir))
    overrides = parse_overrides(list(args.set or []))
    trials = [build_config({**t.model_dump(), **overrides}, "--set") for t in expand(suite, str(args.suite))]
    pack = sorted(set(args.pack or [1]))
    print(f"measuring {len({Shape.of(t) for t in trials})} shape(s) "
          f"of {args.suite}, {', '.join(map(str, pack))} at once, {args.seconds:g} s each", flush=True)  # fmt: skip
    rates = measure_shapes(trials, pack, args.seconds, args.warmup)
    path = write_rates(Path(args.rates_dir or rates_dir()) / f"{card_slug(rates[0].card)}.csv", rates)
    print(f"\n{path}: {len(rates)} row(s) for {rates[0].card}")
    for shape in dict.fromkeys(r.shape for r in rates):
        packing = plan_packing(rates, shape)
        gain = f", {packing.gain:.2f}x one trial alone" if packing.gain == packing.gain else ""
        print(f"  {shape}: {packing.reason}{gain}")
    return ExitCode.DONE


def cmd_bench(args) -> int:
    from harness.bench import run_bench, save
    from harness.bench.runner import default_reference_workers

    if args.suite is not None:
        return cmd_bench_suite(args)
    cfg = trial_config(args)
    compiles = [_bool_or_mode(c) for c in args.compile] if args.compile else [cfg.compile]
    for bs in args.batch_size or []:  # bad values stop here with the key named, not inside a timed run
        build_config({**cfg.model_dump(), "batch_size": bs}, "--batch-size")
    for mode in compiles:
        build_config(
            {**cfg.model_dump(), "engine": "torch", "zero_stage": 0, "deepspeed": {}, "compile": mode}, "--compile"
        )
    for loader in args.loader or []:
        build_config({**cfg.model_dump(), "loader": loader}, "--loader")
    workers = args.reference_workers if args.reference_workers is not None else default_reference_workers()
    result = run_bench(
        cfg,
        args.batch_size or [cfg.batch_size],
        args.precision or [cfg.precision],
        compiles,
        args.loader or [cfg.loader],
        args.warmup,
        args.steps,
        args.loader_steps,
        workers,
        reference=not args.no_reference,
        engines=args.engine,
    )
    print()
    print(result.table())
    out = (
        args.json or Path("results") / "bench" / f"{cfg.method}-{cfg.model}{cfg.depth}x{cfg.width}-{result.device}.json"
    )
    print(f"\n{save(result, out)}")
    return ExitCode.DONE
