"""The trial's own test set evaluated again: the checkpoint must reproduce metrics.json."""

from __future__ import annotations

import torch

from harness.core import schema
from harness.data.datasets import DATASETS
from harness.data.eval_sets import EvalSet
from harness.evaluation.kinds import KINDS, EvalKind, head_logits, saved_part
from harness.metrics import final_metrics, headline_text


class TestKind(EvalKind):
    """The trial's own test set (and validation split) again: the checkpoint must reproduce metrics.json."""

    fields = {"metrics": dict}
    order = 0

    def parse(self, text, name, path):
        return EvalSet(text, "test", "test", "test") if name == "test" and path is None else None

    def names(self):
        return ["test"]

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
        heads, labels = head_logits(saved[schema.TEST]), torch.from_numpy(saved[schema.TEST][schema.PART_LABELS])
        val = (
            (head_logits(saved[schema.VAL]), torch.from_numpy(saved[schema.VAL][schema.PART_LABELS]))
            if schema.VAL in saved
            else (None, None)
        )
        metrics = final_metrics(heads, labels, *val, average=cfg.ensemble_average)
        return {"metrics": metrics, "images": len(labels), "source": data.source, "generated": False}

    def headline(self, record):
        return headline_text(record["metrics"])

    def metrics(self, record):
        return dict(record["metrics"])


KINDS.register("test")(TestKind())
