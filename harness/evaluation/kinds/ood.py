"""Out-of-distribution sets: OOD scores of the trial's test set against the set's images, AUROC, AUPR, FPR@95."""

from __future__ import annotations

import torch

from harness.core import schema
from harness.data.datasets import DATASETS
from harness.data.eval_sets import (
    TrialData,
    ood_folder,
    read_ood,
)
from harness.data.fingerprint import fingerprint
from harness.data.readers import images_under
from harness.evaluation.kinds import KINDS, EvalKind, head_logits, pooled, saved_part
from harness.metrics.uncertainty import ood_metrics


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

        out = head_logits(saved_part(folder, spec.id, schema.OOD_PART, predict))
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
        scores = ood_metrics(clean_heads, pooled(folders, record["id"], schema.OOD_PART), average)
        return {**record, "scores": scores, "ensemble_average": average}

    def headline(self, record):
        msp = record["scores"]["msp"]
        return (
            f"{record['out_images']} OOD vs {record['in_images']} test images: AUROC {100 * msp['auroc']:.1f}, "
            f"FPR@95 (ID +) {100 * msp['fpr95']:.1f}% (max softmax probability)"
        )

    def metrics(self, record):
        return {f"{score}.{m}": v for score, row in record["scores"].items() for m, v in row.items()}


KINDS.register("ood")(OODKind())
