"""Corrupted copies of the test set (CIFAR-C and generated ones): per corruption and severity, calibrated under shift
with the clean temperature."""

from __future__ import annotations

import torch

from harness.core import schema
from harness.data.eval_sets import (
    CORRUPTION_SETS,
    CORRUPTIONS,
    EvalSet,
    TrialData,
    corruption_folder,
    corruption_names,
    generation_record,
    read_corruption,
)
from harness.data.fingerprint import fingerprint
from harness.data.readers import images_under
from harness.evaluation.kinds import KINDS, EvalKind, head_logits, pooled, saved_part
from harness.metrics import headline_text
from harness.metrics.uncertainty import corruption_metrics


def ub17_applies(source: str) -> bool:
    """Whether uncertainty-baselines' 17-corruption average applies: its list is CIFAR-100-C's alone."""
    return CORRUPTION_SETS.get(source, ("",))[0] == "cifar100"


class CorruptionKind(EvalKind):
    """A corrupted copy of the test set: per corruption and severity top-1/NLL/ECE, calibrated under shift with
    the clean temperature, and their means over the benchmark's corruptions."""

    fields = {"per_corruption": dict, "summary": dict, "by_severity": dict}
    order = 1

    def parse(self, text, name, path):
        return EvalSet(text, "corruption", name, name, path) if name in CORRUPTION_SETS else None

    def names(self):
        return list(CORRUPTION_SETS)

    def check(self, spec, trial):
        corruption_folder(spec, trial)

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
            parts[name] = (head_logits(saved), torch.from_numpy(saved[schema.PART_LABELS]), saved[schema.PART_SEVERITY])
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
                pooled(folders, set_id, name),
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


KINDS.register("corruption")(CorruptionKind())
