"""Kinds of evaluation set (``EvalSet.kind``): each knows how to evaluate a trial on a set of its kind (load the
images, predict, score), rescore a deep ensemble from its members' saved logits, say its result in one line and
name its metrics (MLflow: eval.<set id>.<name>). A new kind is one class here and its registry line; its sets'
names are parsed in harness.data.eval_sets."""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch

from harness.core import schema
from harness.core.config import TrialConfig
from harness.core.registry import Registry
from harness.data.datasets import DATASETS
from harness.data.eval_sets import (
    CORRUPTION_SETS,
    CORRUPTIONS,
    EvalSet,
    TrialData,
    corruption_folder,
    corruption_names,
    generation_record,
    ood_folder,
    read_corruption,
    read_ood,
)
from harness.data.fingerprint import fingerprint
from harness.data.readers import images_under
from harness.metrics import final_metrics, headline_text
from harness.metrics.uncertainty import corruption_metrics, ood_metrics
from harness.store.errors import CorruptFile
from harness.store.trial_folder import TrialFolder


class Predictor(Protocol):
    def predict(self, arrays) -> torch.Tensor:
        """Head logits (N, M, K), float32 on the CPU."""


def saved_part(
    folder: TrialFolder, set_id: str, name: str, predict: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """A part's saved logits, predicted and saved first if they are not there (or unreadable)."""
    try:
        saved = folder.eval_part(set_id, name)
    except CorruptFile:
        saved = None
    if saved is None:
        saved = predict()
        folder.save_eval_part(set_id, name, saved)
    return saved


def _heads(saved: dict[str, np.ndarray], key: str = schema.PART_LOGITS) -> torch.Tensor:
    return torch.from_numpy(saved[key]).float()


def _pooled(folders: list[TrialFolder], set_id: str, part: str) -> torch.Tensor:
    """The members' saved head logits of one part, side by side: the deep ensemble's heads."""
    return torch.from_numpy(np.concatenate([f.eval_part(set_id, part)[schema.PART_LOGITS] for f in folders], 1)).float()


class EvalKind:
    """The interface of a kind (the base class evaluates nothing)."""

    fields: dict[str, type] = {}  # what its records hold beside set, id and kind (checked when a record is read)

    def evaluate(
        self, folder: TrialFolder, cfg: TrialConfig, spec: EvalSet, network: Predictor
    ) -> dict:  # pragma: no cover - interface
        """The set's record for one trial (its parts' logits saved under eval/<set id>/ on the way)."""
        raise NotImplementedError

    def fingerprint(self, spec: EvalSet, cfg: TrialConfig) -> str | None:
        """The content hash of the images the set would be read from now: a record of other images is never
        reused (harness.data.fingerprint)."""
        raise NotImplementedError

    def rescore(
        self,
        record: dict,
        folders: list[TrialFolder],
        clean_heads: torch.Tensor,
        temperature: float,
        average: str = "probabilities",
    ) -> dict | None:
        """The record of a deep ensemble of ``folders`` (members that all have it: ``record`` is the first's),
        recomputed on their pooled heads with the members combined by ``average``; None when the kind has no
        ensemble record."""
        return None

    def headline(self, record: dict) -> str:
        """One line of a record, for the terminal."""
        raise NotImplementedError

    def metrics(self, record: dict) -> dict[str, float]:
        """The record's numbers by flat name (the MLflow metrics eval.<set id>.<name>)."""
        raise NotImplementedError


KINDS: Registry[EvalKind] = Registry("evaluation-set kind")


def record_problem(record) -> str | None:
    """What makes ``record`` (read from an eval/<set>/metrics.json) unusable, or None."""
    if not isinstance(record, dict) or record.get("kind") not in KINDS.names():
        return f"not an evaluation record (kind must be one of {', '.join(KINDS.names())})"
    wanted = {"set": str, "id": str, **KINDS.get(record["kind"]).fields}
    wrong = [k for k, t in wanted.items() if not isinstance(record.get(k), t)]
    return f"a {record['kind']} record without {', '.join(wrong)}" if wrong else None


def kind_of(record_or_spec) -> EvalKind:
    kind = record_or_spec["kind"] if isinstance(record_or_spec, dict) else record_or_spec.kind
    return KINDS.get(kind)


class TestKind(EvalKind):
    """The trial's own test set (and validation split) again: the checkpoint must reproduce metrics.json."""

    fields = {"metrics": dict}

    def fingerprint(self, spec, cfg):
        return DATASETS.get(cfg.dataset).fingerprint(cfg.data_dir)

    def evaluate(self, folder, cfg, spec, network):
        from harness.data import load_dataset

        data = load_dataset(cfg)
        splits = {schema.TEST: data.test, **({schema.VAL: data.val} if data.val is not None else {})}
        saved = {
            name: saved_part(
                folder,
                spec.id,
                name,
                lambda arrays=arrays: {
                    schema.PART_LOGITS: network.predict(arrays).half().numpy(),
                    schema.PART_LABELS: arrays.y,
                },
            )
            for name, arrays in splits.items()
        }
        heads, labels = _heads(saved[schema.TEST]), torch.from_numpy(saved[schema.TEST][schema.PART_LABELS])
        val = (
            (_heads(saved[schema.VAL]), torch.from_numpy(saved[schema.VAL][schema.PART_LABELS]))
            if schema.VAL in saved
            else (None, None)
        )
        metrics = final_metrics(heads, labels, *val, average=cfg.ensemble_average)
        return {"metrics": metrics, "images": len(labels), "source": data.source, "generated": False}

    def headline(self, record):
        return headline_text(record["metrics"])

    def metrics(self, record):
        return dict(record["metrics"])


def ub17_applies(source: str) -> bool:
    """Whether uncertainty-baselines' 17-corruption average applies: its list is CIFAR-100-C's alone."""
    return CORRUPTION_SETS.get(source, ("",))[0] == "cifar100"


class CorruptionKind(EvalKind):
    """A corrupted copy of the test set: per corruption and severity top-1/NLL/ECE, calibrated under shift with
    the clean temperature, and their means over the benchmark's corruptions."""

    fields = {"per_corruption": dict, "summary": dict, "by_severity": dict}

    def fingerprint(self, spec, cfg):
        where = corruption_folder(spec, TrialData.of(cfg))
        if CORRUPTION_SETS[spec.source][2] == "npy":
            return fingerprint(sorted(where.glob("*.npy")), where)
        return fingerprint(images_under(where), where)

    def evaluate(self, folder, cfg, spec, network):
        trial = TrialData.of(cfg)
        where = corruption_folder(spec, trial)
        parts = {}
        for name in corruption_names(where, spec):

            def predict(name=name):
                arrays, severity = read_corruption(where, name, spec, trial)
                return {
                    schema.PART_LOGITS: network.predict(arrays).half().numpy(),
                    schema.PART_LABELS: arrays.y,
                    schema.PART_SEVERITY: severity,
                }

            saved = saved_part(folder, spec.id, name, predict)
            parts[name] = (_heads(saved), torch.from_numpy(saved[schema.PART_LABELS]), saved[schema.PART_SEVERITY])
        generation = generation_record(where)
        temperature = folder.metrics().get("temperature")  # fitted on clean images, applied unchanged under shift
        return {
            **corruption_metrics(parts, CORRUPTIONS, temperature, cfg.ensemble_average, ub17_applies(spec.source)),
            "ensemble_average": cfg.ensemble_average,
            "source": str(where),
            "generated": generation is not None,
            "generation": generation,
            "images": sum(len(p[1]) for p in parts.values()),
        }

    def rescore(self, record, folders, clean_heads, temperature, average="probabilities"):
        set_id, parts = record["id"], {}
        for name in record["per_corruption"]:
            first = folders[0].eval_part(set_id, name)
            parts[name] = (
                _pooled(folders, set_id, name),
                torch.from_numpy(first[schema.PART_LABELS]),
                first[schema.PART_SEVERITY],
            )
        ub17 = ub17_applies(record["set"].split("=")[0])
        summary = corruption_metrics(parts, CORRUPTIONS, temperature, average, ub17)
        return {**record, **summary, "ensemble_average": average}

    def headline(self, record):
        s = record["summary"]
        label = " (generated stand-in)" if record.get("generated") else ""
        return (
            f"corrupted: {headline_text(s, 'corrupted_')} over {s['corruptions_in_mean']} corruptions x 5 "
            f"severities{label}"
        )

    def metrics(self, record):
        return {
            **record["summary"],
            **{f"severity{s}_{m}": v for s, row in record["by_severity"].items() for m, v in row.items()},
        }


class OODKind(EvalKind):
    """Out-of-distribution images against the trial's own test images: AUROC, AUPR, FPR@95%TPR per score."""

    fields = {"scores": dict, "in_images": int, "out_images": int}

    def fingerprint(self, spec, cfg):
        if spec.source in ("textures", "folder"):
            where = ood_folder(spec, TrialData.of(cfg))
            return fingerprint(images_under(where), where)
        dataset = cfg.dataset if spec.source == "heldout-classes" else spec.source
        return DATASETS.get(dataset).fingerprint(cfg.data_dir)

    def evaluate(self, folder, cfg, spec, network):
        described = {}

        def predict():
            arrays, described["source"] = read_ood(spec, TrialData.of(cfg))
            return {schema.PART_LOGITS: network.predict(arrays).half().numpy()}

        out = _heads(saved_part(folder, spec.id, schema.OOD_PART, predict))
        in_heads = torch.from_numpy(folder.logits()[schema.TEST_LOGITS]).float()  # the in-distribution side, always
        return {
            "scores": ood_metrics(in_heads, out, cfg.ensemble_average),
            "ensemble_average": cfg.ensemble_average,
            "in_images": len(in_heads),
            "out_images": len(out),
            "source": described.get("source", "(saved logits)"),
            "generated": False,
        }

    def rescore(self, record, folders, clean_heads, temperature, average="probabilities"):
        scores = ood_metrics(clean_heads, _pooled(folders, record["id"], schema.OOD_PART), average)
        return {**record, "scores": scores, "ensemble_average": average}

    def headline(self, record):
        msp = record["scores"]["msp"]
        return (
            f"{record['out_images']} OOD vs {record['in_images']} test images: AUROC {100 * msp['auroc']:.1f}, "
            f"FPR@95 (ID +) {100 * msp['fpr95']:.1f}% (max softmax probability)"
        )

    def metrics(self, record):
        return {f"{score}.{m}": v for score, row in record["scores"].items() for m, v in row.items()}


KINDS.register("test")(TestKind())
KINDS.register("corruption")(CorruptionKind())
KINDS.register("ood")(OODKind())
