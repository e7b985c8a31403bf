"""The contract checks of a registered entry (`harness check-plugin FILE`, and the harness's tests over every
built-in one): a method or a model trains a few steps on tiny synthetic data with its batch shapes fitting its
heads, is reproducible under a seed, resumes from a checkpoint to the same logits, and is costed on the meta device;
a dataset reads into uint8 arrays of its declared shape; a metric gives one finite number, the same twice."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core import schema

TINY = dict(
    dataset="synthetic", synthetic_size=64, synthetic_classes=4, synthetic_resolution=16, depth=10, width=1,
    batch_size=16, eval_batch_size=64, progress=False, eval_every=1, precision="fp32", device="cpu",
)  # fmt: skip


@dataclass
class Check:
    entry: str  # "method regmixup"
    what: str  # what was checked
    error: str = ""  # empty: passed
    fix: str = ""

    @property
    def passed(self) -> bool:
        return not self.error

    def line(self) -> str:
        mark = "ok  " if self.passed else "FAIL"
        return f"{mark} {self.entry}: {self.what}" + ("" if self.passed else f": {self.error}; fix: {self.fix}")


def _trial(keys: dict, folder: Path, source: str):
    from harness.trial.catalog import build_config

    return build_config({**TINY, "output_dir": str(folder), **keys}, source)


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:400]}"


def check_trainable(entry: str, keys: dict) -> list[Check]:
    """A method or a model (``keys`` pick it): config, FLOP count, training steps and shapes, seed, resume."""
    from harness.store.trial_folder import TrialFolder
    from harness.trial.cost import trial_flops
    from harness.trial.trainer import Trainer

    out = []
    folder = Path(tempfile.mkdtemp(prefix="harness-check-"))
    try:
        try:
            cfg = _trial({**keys, "epochs": keys.get("epochs", 2)}, folder / "a", entry)
        except Exception as err:
            return [Check(entry, "builds a tiny trial", _first_line(err), "its keys' defaults and check_config")]
        out.append(Check(entry, f"builds a tiny trial (M = {cfg.num_inputs})"))
        try:
            trial_flops(cfg)
            out.append(Check(entry, "counts its FLOPs on the meta device"))
        except Exception as err:
            out.append(
                Check(
                    entry,
                    "counts its FLOPs on the meta device",
                    _first_line(err),
                    "no .item(), .tolist() or data-dependent shapes in forward",
                )
            )
        try:
            Trainer(cfg).run()
            logits = TrialFolder(cfg.trial_dir).logits()[schema.TEST_LOGITS]
            heads = cfg.num_inputs
            if logits.shape[1:] != (heads, 4) or not np.isfinite(logits).all():
                raise ValueError(f"test logits of shape {logits.shape}, finite: {np.isfinite(logits).all()}")
            out.append(Check(entry, f"trains {cfg.epochs} epochs, its batches fit its heads, (N, {heads}, K) logits"))
        except Exception as err:
            out.append(
                Check(
                    entry,
                    "trains on tiny data",
                    _first_line(err),
                    "prepare must return MixedBatch shapes the model's heads take (help(MixedBatch))",
                )
            )
            return out
        again = _trial({**keys, "epochs": cfg.epochs}, folder / "b", entry)
        Trainer(again).run()
        out.append(
            _same_logits(
                entry,
                "gives the same logits for the same seed",
                again,
                logits,
                "draw randomness from torch's seeded generators (or a generator seeded from cfg.seed)",
            )
        )
        resumed = _trial({**keys, "epochs": cfg.epochs}, folder / "c", entry)
        stopped = Trainer(resumed)
        first = stopped.train_epoch
        calls = []

        def one_epoch(*args, **kwargs):
            if calls:
                raise KeyboardInterrupt
            calls.append(1)
            return first(*args, **kwargs)

        stopped.train_epoch = one_epoch
        try:
            stopped.run()
        except KeyboardInterrupt:
            pass
        Trainer(resumed).run()
        out.append(
            _same_logits(
                entry,
                "resumes from its checkpoint to the same logits",
                resumed,
                logits,
                "keep all training state in the model, or in the method's state_dict / load_state_dict",
            )
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def _same_logits(entry: str, what: str, trial, expected: np.ndarray, fix: str) -> Check:
    """Whether a trial's saved test logits equal ``expected`` bit for bit."""
    from harness.store.trial_folder import TrialFolder

    same = np.array_equal(TrialFolder(trial.trial_dir).logits()[schema.TEST_LOGITS], expected)
    return Check(entry, what, "" if same else "the logits differ", fix)


def check_dataset(name: str) -> list[Check]:
    """Read through the harness (a tiny trial of it): uint8 (N, H, W, C) images, labels within its classes."""
    from harness.data import load_dataset

    entry = f"dataset {name}"
    folder = Path(tempfile.mkdtemp(prefix="harness-check-"))
    try:
        cfg = _trial({"method": "vanilla", "dataset": name, "train_subset": 64, "test_subset": 64}, folder, entry)
        data = load_dataset(cfg)
        for split in ("train", "test"):
            arrays = getattr(data, split)
            if arrays.x.dtype != np.uint8 or arrays.x.ndim != 4 or arrays.x.shape[-1] not in (1, 3):
                raise ValueError(f"{split} images {arrays.x.dtype} {arrays.x.shape}, need uint8 (N, H, W, C)")
            if arrays.y.min() < 0 or arrays.y.max() >= data.num_classes:
                raise ValueError(f"{split} labels outside 0..{data.num_classes - 1}")
        return [Check(entry, f"reads into uint8 images {data.train.x.shape[1:]}, labels within {data.num_classes}")]
    except Exception as err:
        return [Check(entry, "reads into uint8 image arrays", _first_line(err),
                      "return ImageSplits of uint8 (N, H, W, C) arrays and int labels (harness.data)")]  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_metric(name: str) -> list[Check]:
    import torch

    from harness.metrics import METRICS

    entry, metric = f"metric {name}", METRICS.get(name)
    if metric.of_ensemble is None:
        return [Check(entry, "is registered (computed by the harness's metric suite)")]
    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(200, 10, generator=generator), torch.randint(0, 10, (200,), generator=generator)
    try:
        first, second = float(metric.of_ensemble(logits, labels)), float(metric.of_ensemble(logits, labels))
        if not np.isfinite(first) or first != second:
            raise ValueError(f"gave {first}, then {second}")
        return [Check(entry, f"gives one finite number, the same twice ({first:.4g} on random logits)")]
    except Exception as err:
        return [Check(entry, "gives one finite number", _first_line(err), "(logits (N, K), labels (N,)) -> float")]


def check_entries(entries: list[tuple[str, str]], keys: dict | None = None) -> list[Check]:
    """(kind, name) pairs -> every check's result; ``keys`` set in every tiny trial (e.g. an FGE needs epochs)."""
    out, keys = [], keys or {}
    for kind, name in entries:
        if kind == "method":
            out += check_trainable(f"method {name}", {"method": name, **keys})
        elif kind == "model":
            from harness.models import MODELS

            depth = next((d for d in (10, 2, 18, 4, 8, 16, 20) if _fits(MODELS.get(name), d)), 10)
            # 32 pixels: a deep network's last feature map keeps more than one value per channel for batch norm
            shape = {"method": "vanilla", "model": name, "depth": depth, "synthetic_resolution": 32}
            out += check_trainable(f"model {name}", {**shape, **keys})
        elif kind == "dataset":
            out += check_dataset(name)
        elif kind == "metric":
            out += check_metric(name)
    return out


def _fits(model, depth: int) -> bool:
    try:
        model.check_shape(depth, 1)
        return True
    except ValueError:
        return False


def registered_by(spec: str) -> list[tuple[str, str]]:
    """What a loaded plugin registered: (kind, name) pairs."""
    from harness.core.plugins import registries

    out = []
    for kind, registry in registries().items():
        out += [(kind, n) for n in registry.names() if (p := registry.source(n)) is not None and p.spec == spec]
    return out
