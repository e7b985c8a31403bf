"""Out-of-distribution sets: OOD scores of the trial's test set against the set's images, AUROC, AUPR, FPR@95."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.core import schema
from harness.data.datasets import DATASETS
from harness.data.errors import DataError
from harness.data.eval_sets import OOD_SOURCES, OPENOOD, OPENOOD_GROUPS, EvalSet, TrialData, ood_folder, read_ood
from harness.data.fingerprint import fingerprint
from harness.data.readers import images_under
from harness.evaluation.kinds import KINDS, EvalKind, head_logits, pooled, saved_part
from harness.metrics.uncertainty import ood_metrics


class OODKind(EvalKind):
    """Out-of-distribution images against the trial's own test images: AUROC, AUPR, FPR@95%TPR per score."""

    fields = {"scores": dict, "in_images": int, "out_images": int}
    order = 2

    def parse(self, text, name, path):
        if not name.startswith("ood:"):
            return None
        source = name[4:]
        if source == "folder":
            if not path:
                raise ValueError(f"{text!r}: ood:folder needs a folder, as ood:folder=/data/dtd/images")
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(path).name)
            return EvalSet(text, "ood", source, f"ood-folder-{safe}", path)
        if path is None and (source in DATASETS.names() or source in OOD_SOURCES or source in OPENOOD_GROUPS):
            return EvalSet(text, "ood", source, f"ood-{source}")
        return None

    def names(self):
        sources = [*DATASETS.names(), *(s if s != "folder" else "folder=PATH" for s in OOD_SOURCES), *OPENOOD_GROUPS]
        return [f"ood:{source}" for source in sources]

    def expand(self, spec, dataset):
        if spec.source not in OPENOOD_GROUPS:
            return [spec]
        if dataset not in OPENOOD:
            raise ValueError(
                f"{spec.name}: OpenOOD's near/far protocol is defined for {', '.join(OPENOOD)}, not {dataset}; "
                "name the OOD sets one by one (ood:<dataset>, ood:textures, ood:folder=PATH)"
            )
        return [self.parse(f"ood:{m}", f"ood:{m}", None) for m in OPENOOD[dataset][spec.source]]

    def check(self, spec, trial):
        if spec.source == "heldout-classes" and trial.class_subset is None or spec.source == trial.dataset:
            read_ood(spec, trial)  # raises with the explanation
        elif spec.source in DATASETS.names():
            DATASETS.get(spec.source)(data_dir=trial.data_dir, check_only=True)
        elif spec.source in ("textures", "folder"):  # walked once here: traps, caps and an empty folder said now
            folder = ood_folder(spec, trial)
            if not images_under(folder):
                raise DataError(f"{folder}: no images (.png, .jpg, .jpeg, .bmp) found under it")

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
