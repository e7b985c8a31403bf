"""harness.evaluation.kinds: evaluation records are checked against their kind."""

import numpy as np

from harness.core import schema
from harness.evaluation.kinds import record_problem
from harness.store.trial_folder import TrialFolder
from helpers import finished_trial, trial


def test_evaluation_records_are_checked_against_their_kind(tmp_path, said_by):
    cfg = trial(dataset="synthetic", synthetic_classes=4, depth=10, width=1, name="s", output_dir=tmp_path)
    labels = np.arange(8) % 4
    folder = TrialFolder(finished_trial(cfg, np.eye(4)[labels][:, None], labels))
    good = {"kind": "ood", "id": "ood-svhn", "set": "ood:svhn", "scores": {}, "in_images": 8, "out_images": 8}
    folder.finish_eval("ood-svhn", good)
    folder.finish_eval("ood-c10", {**good, "id": "ood-c10", "set": "ood:cifar10", "in_images": "8"})
    folder.finish_eval("odd", {**good, "id": "odd", "kind": "magic"})
    (cfg.trial_dir / "eval" / "test").mkdir()
    (cfg.trial_dir / "eval" / "test" / schema.METRICS).write_text('{"kind": ')  # truncated
    said = said_by("harness.store.trial_folder")
    assert list(folder.evaluations(record_problem)) == ["ood-svhn"]
    assert any("eval/test/metrics.json: not valid JSON" in m and "left out" in m for m in said), said
    assert any("eval/ood-c10/metrics.json: a ood record without in_images" in m for m in said), said
    assert any("eval/odd/metrics.json: not an evaluation record (kind must be one of" in m for m in said), said
