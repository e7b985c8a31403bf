"""`harness data prepare` (FFCV files) and `harness data corrupt` (a generated CIFAR-C stand-in)."""

from __future__ import annotations

import logging
from pathlib import Path

from harness.core.config import ConfigError
from harness.core.exit_codes import ExitCode
from harness.core.yaml_files import parse_overrides
from harness.trial.catalog import build_config

logger = logging.getLogger(__name__)


def cmd_data_prepare(args) -> int:
    from harness.data import load_dataset
    from harness.data.ffcv_loader import beton_dir, beton_path, write_beton

    raw = {"dataset": args.dataset, **parse_overrides(list(args.set or []))}
    if args.data_dir:
        raw["data_dir"] = args.data_dir
    if args.out:
        raw["ffcv_dir"] = args.out
    cfg = build_config(raw, "harness data prepare")
    data = load_dataset(cfg)
    for split in ("train", "test"):
        arrays = getattr(data, split)
        path = write_beton(arrays, beton_path(beton_dir(cfg), cfg.dataset, split), workers=args.workers)
        print(f"{path}: {len(arrays)} images, {path.stat().st_size / 2**20:.1f} MiB")
    return ExitCode.DONE


def cmd_data_corrupt(args) -> int:
    from harness.data import load_dataset
    from harness.data.corrupt import write_generated_set
    from harness.data.datasets import default_data_dir
    from harness.data.eval_sets import CORRUPTION_SETS, CORRUPTIONS

    if f"{args.dataset}-c" not in CORRUPTION_SETS or args.dataset == "tinyimagenet":
        raise ConfigError(f"{args.dataset}: `harness data corrupt` writes the CIFAR-C layout: cifar10 or cifar100")
    unknown = sorted(set(args.corruptions or []) - set(CORRUPTIONS))
    if unknown:
        raise ConfigError(f"--corruptions: unknown {', '.join(unknown)}; allowed: {', '.join(CORRUPTIONS)}")
    raw = {"dataset": args.dataset, **({"data_dir": args.data_dir} if args.data_dir else {})}
    if args.images:
        raw["test_subset"] = args.images
    cfg = build_config(raw, "harness data corrupt")
    data = load_dataset(cfg)
    folder = CORRUPTION_SETS[f"{args.dataset}-c-generated"][1][0]
    out = Path(args.out) if args.out else default_data_dir(cfg.data_dir) / folder
    print(f"writing a generated stand-in (not the official {args.dataset}-C) of {len(data.test)} test images to {out}")
    write_generated_set(
        data.test.x,
        data.test.y,
        out,
        args.dataset,
        data.source + (f", a random subset of {args.images} test images" if args.images else ""),
        seed=args.seed,
        corruptions=tuple(args.corruptions or CORRUPTIONS),
        force=args.force,
    )
    name = f"{args.dataset}-c-generated" + ("" if not args.out else f"={out}")
    print(f"{out}: done; evaluate on it with `harness evaluate SUITE --on {name}`")
    return ExitCode.DONE
