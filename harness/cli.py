"""The ``harness`` command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.config import ConfigError, load_trial_config
from harness.data import DataError


def cmd_train(args) -> int:
    from harness.trainer import Trainer, format_summary

    overrides = list(args.set or [])
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    cfg = load_trial_config(args.config, overrides)
    trainer = Trainer(cfg)
    print(f"{cfg.trial_id}: {len(trainer.data.train)} train / {len(trainer.data.test)} test images "
          f"from {trainer.data.source}; {len(trainer.train_loader)} steps/epoch on {trainer.device}", flush=True)
    metrics = trainer.run(restart=args.restart)
    print(format_summary(cfg, metrics))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Benchmarking harness for MixMo and its baselines.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="run one trial locally (no Ray)")
    train.add_argument("config", type=Path, nargs="?", help="trial YAML file (defaults: the paper's CIFAR-100 recipe)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    train.add_argument("--data-dir", help="dataset folder (else the config's data_dir, else $HARNESS_DATA_DIR)")
    train.add_argument("--restart", action="store_true", help="discard an existing checkpoint and results")
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last end-of-epoch checkpoint is kept, run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
