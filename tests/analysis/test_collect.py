"""analysis.collect: the report counts only the suite's own trials and lists the others."""

import json
import shutil

import numpy as np
import pytest

from helpers import finished_trial, trial


@pytest.mark.slow  # trains, or runs the CLI in subprocesses: the full lane
def test_the_report_counts_only_the_suites_trials_and_lists_the_others(tmp_path):
    from analysis.report import build_report

    root = tmp_path / "results" / "shared"
    labels = np.arange(10) % 3

    def write(right: int, **keys):
        cfg = trial(name=keys.pop("name", root.name), output_dir=root.parent, dataset="cifar100", depth=16, **keys)
        logits = np.eye(3)[np.where(np.arange(10) < right, labels, (labels + 1) % 3)][:, None, :] * 3
        return cfg, finished_trial(cfg, logits, labels)

    grid = [write(6, seed=s, width=2, epochs=1)[0] for s in (0, 1)]
    write(9, seed=0, width=2, epochs=2)  # the suite was edited since: another recipe
    write(9, seed=0, width=4, epochs=1)  # a width the grid no longer has
    _, other = write(9, seed=2, width=2, epochs=1, name="other")
    shutil.copytree(other, root / other.name)  # copied in from another suite
    _, renamed = write(9, seed=3, width=2, epochs=1)
    renamed.rename(root / "vanilla-wrn16x2-M1-s9-00000000")  # a folder renamed by hand

    report = build_report(root, grid={t.trial_id: t.record() for t in grid})
    summary = report["summary_frame"]
    assert summary.members.tolist() == [1, 2]  # the two seeds, and their ensemble
    summary = summary[summary.members == 1]
    assert summary.n.tolist() == [2] and summary.top1_mean.tolist() == pytest.approx([0.6])
    foreign = report["not_in_suite"]
    assert sorted(foreign.values()) == sorted(
        [
            "a trial of suite other",
            "another recipe: epochs 2 (the suite's: 1)",
            "its config.yaml is trial vanilla-wrn16x2-M1-s3-"
            + renamed.name.rsplit("-", 1)[1]
            + " (copied in from elsewhere)",
            "not in the grid (method vanilla, model wrn, depth 16, width 4, M 1, seed 0)",
        ]
    )
    assert json.loads((report["dir"] / "not_in_suite.json").read_text()) == foreign
    assert "Not in this suite (4 folders)" in (report["dir"] / "index.html").read_text()
