"""Equal-budget tuning (a suite's `tune:`): every method the same number of configurations, drawn from a seed with Ray
Tune's samplers, selected on the validation split alone, then trained at the final seeds and reported on test."""

import itertools
import json
import os
import signal
import time

import numpy as np
import pytest
import yaml

from harness.core import schema
from harness.planning import tuning
from harness.planning.suite import load_suite, resolved_study
from helpers import SUITE, cli, finished_trial, harness, harness_background, runs

TUNE = {
    "space": {"base_lr": {"loguniform": [0.01, 0.2]}, "l2": {"loguniform": [1.0e-5, 1.0e-3]}},
    "methods": {"cut_mixmo": {"p": {"uniform": [0.3, 0.7]}}},
    "trials": 4,
    "select": "nll",
    "final_seeds": [0, 1],
}


def study_suite(tmp_path, tune=None, **changes):
    suite = {
        **SUITE,
        "name": "study",
        "storage": str(tmp_path / "results"),
        "grid": {"method": ["vanilla", "cut_mixmo"]},
        "base": {**SUITE["base"], "synthetic_size": 256, "val_size": 64, "width": 1},
        "tune": {**TUNE, **(tune or {})},
        **changes,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


# --- the study's definition (fast)
@pytest.mark.parametrize(
    "change, message",
    [
        ({"base": {**SUITE["base"], "val_size": 0}}, "needs `val_size` > 0 in `base:`"),
        ({"tune": {"space": {"l2": {"uniform": [-1.0, 1.0]}}}}, "tune.space.l2: -1.0 is outside what the key allows"),
        ({"tune": {"space": {"nope": {"uniform": [0.0, 1.0]}}}}, "tune.space.nope: unknown trial key"),
        (
            {"grid": {"method": ["vanilla"], "width": [1, 2]}, "tune": {"space": {"width": {"int": [1, 4]}}}},
            "`width` is a grid key too",
        ),
        ({"tune": {"space": {"seed": {"int": [0, 4]}}}}, "`seed` is not searched"),
        ({"tune": {"select": "flops"}}, "tune.select: 'flops' is not a registered metric"),
        ({"tune": {"select": "train_hours"}}, "'train_hours' is a cost measure"),
        (
            {"tune": {"space": {"l2": {"uniform": [0.1, 0.2], "loguniform": [0.1, 0.2]}}}},
            "give exactly one of loguniform",
        ),
        ({"tune": {"space": {"l2": {"loguniform": [0.0, 0.2]}}}}, "the low end must be > 0"),
        ({"tune": {"methods": {"mimo": {"p": {"uniform": [0.1, 0.2]}}}}}, "the grid has no trial of this method"),
        ({"grid": {"method": ["vanilla", "cut_mixmo"], "seed": [0, 1]}}, "drop `seed` from the grid"),
        ({"tune": {"trials": 0}}, "tune.trials"),
        ({"tune": {"search": "grid"}}, "tune.search"),
        ({"tune": {"scheduler": "asha", "select": "ece"}}, "ASHA compares configurations at every epoch"),
        ({"tune": {"scheduler": "asha"}, "base": {**SUITE["base"], "val_size": 64, "eval_every": 0}}, "eval_every"),
        ({"tune": {"parallel": 0}}, "tune.parallel"),
    ],
)
def test_a_bad_study_is_one_line_naming_the_key(tmp_path, change, message):
    tune = change.pop("tune", None)
    if tune and "space" in tune:
        tune = {**tune, "methods": {}}
    if "base" in change:
        change["base"] = {**change["base"], "synthetic_size": 256}
    proc = cli("run", study_suite(tmp_path, tune, **change), "--dry-run")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_the_dry_run_shows_both_phases_and_their_cost(tmp_path):
    proc = cli("run", study_suite(tmp_path, {"recipe": True}), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "suite study: 12 trials" in proc.stdout  # 2 methods x 4 configurations, and the recipe at 2 seeds
    assert "study: 2 setting(s) x 4 configuration(s) each (random search, seed 0)" in proc.stdout
    assert "cut_mixmo also searches p uniform [0.3, 0.7]" in proc.stdout
    assert "selected on the validation split by nll (lower is better)" in proc.stdout
    assert (
        "phase 2 cost (at most: a selected configuration at the search seed is its own trial; from its shapes): "
        in proc.stdout
        and "GFLOP" in proc.stdout
    )
    bayes = cli("run", study_suite(tmp_path, {"search": "optuna", "parallel": 2}), "--dry-run")
    assert bayes.returncode == 0, bayes.stderr
    assert "suite study: 4 trials" in bayes.stdout  # the first batch asked: 2 per method
    assert "phase 1 cost (at most: 4 configurations per setting; from its shapes): " in bayes.stdout


def test_draws_are_seeded_shared_between_methods_and_stable_when_the_study_grows():
    tune = tuning.Tune.model_validate({**TUNE, "trials": 8})
    vanilla, mixmo = tuning.draws(tune, "vanilla"), tuning.draws(tune, "cut_mixmo")
    assert vanilla == tuning.draws(tune, "vanilla")  # the same seed, the same configurations
    assert [{k: d[k] for k in ("base_lr", "l2")} for d in mixmo] == vanilla  # every method meets the same lr, l2
    assert all(0.3 <= d["p"] <= 0.7 for d in mixmo) and all(0.01 <= d["base_lr"] <= 0.2 for d in vanilla)
    assert all(len(f"{d['l2']:.10g}".replace(".", "").replace("e-", "").lstrip("0")) <= 6 for d in vanilla)
    smaller = tuning.draws(tuning.Tune.model_validate({**TUNE, "trials": 3}), "vanilla")
    assert smaller == vanilla[:3]  # a larger budget keeps the first draws (their trials are reused)
    other = tuning.draws(tuning.Tune.model_validate({**TUNE, "trials": 8, "seed": 1}), "vanilla")
    assert other != vanilla
    more = tuning.Tune.model_validate(
        {**TUNE, "trials": 8, "space": {**TUNE["space"], "momentum": {"uniform": [0.8, 0.95]}}}
    )
    assert [d["base_lr"] for d in tuning.draws(more, "vanilla")] == [d["base_lr"] for d in vanilla]
    logs = np.log10([d["base_lr"] for d in tuning.draws(tuning.Tune.model_validate({**TUNE, "trials": 400}), "x")])
    assert abs(logs.mean() - np.log10([0.01, 0.2]).mean()) < 0.05  # log-uniform: uniform in log space


def bowl(config):
    """A validation NLL with its minimum at base_lr = 0.05."""
    return abs(np.log(config["base_lr"] / 0.05))


def test_optuna_search_replays_its_asks_from_the_told_scores_and_learns_from_them():
    tune = tuning.Tune.model_validate({**TUNE, "search": "optuna", "trials": 12, "parallel": 3, "methods": {}})

    def search(score, known=None):
        return tuning.optuna_search(tune, "vanilla", lambda c: dict(c), lambda t: score(t) if known is None or
                                    known(t) else None)[0]  # fmt: skip

    asked = search(bowl)
    assert len(asked) == 12 and asked == search(bowl)  # the same told scores replay the same asks
    assert all(0.01 <= c["base_lr"] <= 0.2 and 1e-5 <= c["l2"] <= 1e-3 for c in asked)
    assert search(bowl, known=lambda t: False) == asked[:3]  # nothing ended: the first batch alone, the same one
    first_six = asked[:6]
    assert search(bowl, known=lambda t: t in first_six) == asked[:9]  # two batches told: the third asked, no more
    other = search(lambda c: -bowl(c))  # the opposite scores: the random start is the same, TPE's asks are not
    assert other[:6] == asked[:6] and other[6:] != asked[6:]
    tpe = [abs(np.log(c["base_lr"] / 0.05)) for c in asked[6:]]
    assert np.median(tpe) < np.median([abs(np.log(c["base_lr"] / 0.05)) for c in other[6:]])
    failed = search(lambda c: float("nan") if c == asked[0] else bowl(c))  # a failed one is told as Optuna's FAIL
    assert len(failed) == 12 and failed[:6] == asked[:6]


@pytest.mark.parametrize("higher", [True, False])
def test_expected_best_is_the_exact_mean_over_subsets(higher):
    """Tang et al.'s estimator equals the mean, over every n-subset of the configurations tried, of its best."""
    rng = np.random.default_rng(3)
    scores = list(rng.normal(size=7).round(2))  # ties included
    scores[2] = scores[5]
    best = max if higher else min
    for n in range(1, 8):
        exact = np.mean([best(c) for c in itertools.combinations(scores, n)])
        assert tuning.expected_best(scores, [n], higher)[0] == pytest.approx(exact, abs=1e-12)
    low, high = tuning.expected_best_band(scores, [1, 4, 7], higher, draws=400)
    curve = tuning.expected_best(scores, [1, 4, 7], higher)
    assert np.all(low <= np.array(curve) + 1e-12) and np.all(np.array(curve) <= high + 1e-12)
    assert tuning.expected_best(scores, [7], higher)[0] == best(scores)
    assert tuning.expected_best([0.2, float("nan")], [1], True)[0] == pytest.approx(0.2)  # a failed one ranks worst


def test_the_selection_reads_validation_logits_only(tmp_path):
    """Each configuration's validation logits have a known NLL, and its test logits the opposite ranking: the
    selection is the configuration of lowest validation NLL as scikit-learn's log_loss computes it, never the test's."""
    from sklearn.metrics import log_loss

    path = study_suite(tmp_path)
    suite = load_suite(path)
    first = resolved_study(suite, str(path))
    rng = np.random.default_rng(0)

    def logits(m, sharpness):
        labels = rng.integers(0, 4, 64)
        heads = rng.normal(size=(64, m, 4)) * sharpness
        heads[np.arange(64), :, labels] += 2.0
        return heads.astype(np.float16), labels

    expected, by_test = {}, {}
    for setting, trials in first.study.search.items():
        val_losses, test_losses = [], []
        for i, trial in enumerate(trials):
            val, val_labels = logits(trial.num_inputs, 0.5 + i)
            test, test_labels = logits(trial.num_inputs, 3.5 - i)  # the reverse order on test
            finished_trial(trial, test, test_labels)
            saved = dict(np.load(trial.trial_dir / schema.LOGITS))
            np.savez(trial.trial_dir / schema.LOGITS, **saved, val_logits=val, val_labels=val_labels)
            for heads, labels, losses in ((val, val_labels, val_losses), (test, test_labels, test_losses)):
                probs = np.exp(heads.astype(np.float64))
                probs = probs / probs.sum(-1, keepdims=True)
                losses.append(log_loss(labels, probs.mean(1), labels=range(4)))  # the suite's rule: mean probabilities
        expected[setting], by_test[setting] = int(np.argmin(val_losses)), int(np.argmin(test_losses))
    assert expected != by_test  # the two splits disagree: the selection says which one it read
    resolved = resolved_study(suite, str(path))
    assert {s: sel.chosen for s, sel in resolved.selections.items()} == expected
    for setting, trials in resolved.finals.items():
        chosen = first.study.search[setting][expected[setting]]
        assert [t.seed for t in trials] == [0, 1] and all(t.base_lr == chosen.base_lr for t in trials)
        assert trials[0].trial_id == chosen.trial_id  # seed 0 on the same split: the configuration's own trial
    tags = resolved.run_tags()
    assert sum(t[tuning.SELECTED_TAG] == "true" for t in tags.values()) == 2


# --- a study run (slow lane)
@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    path = study_suite(tmp, {"recipe": True})
    out = harness("run", path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    return tmp, path, out.stdout


@pytest.mark.slow  # trains 14 trials
def test_a_study_runs_both_phases_and_reports_who_wins_at_which_budget(study_run):
    tmp, path, stdout = study_run
    suite = load_suite(path)
    resolved = resolved_study(suite, str(path))
    assert "selection on the validation split (nll):" in stdout
    for setting, selection in resolved.selections.items():
        assert selection.chosen is not None and f"  {setting}: configuration {selection.chosen + 1} of 4" in stdout
    assert len(resolved.trials) == 8 + 4 + 2  # configurations, recipe at 2 seeds, 2 new final trials (seed 0 reused)
    assert "14 finished" in stdout
    report = harness("report", path)
    assert report.returncode == 0, report.stderr[-3000:]
    out = tmp / "results" / "study" / schema.REPORT_DIR
    tried = (out / "tuning.csv").read_text().splitlines()
    assert len(tried) == 1 + 8 and tried[0].startswith("setting,method,configuration,base_lr,l2,p,validation nll")
    assert sum(line.split(",")[-2] == "True" for line in tried[1:]) == 2  # one selected per method
    page = (out / "index.html").read_text()
    assert "Tuning: the same budget for every method" in page and "figures/tuning_budget.png" in page
    assert "4 configurations of base_lr, l2, p, drawn at random" in page and "without reading any test image" in page
    assert "Ranking at each budget" in page and "Tuned minus recipe" in page
    results = (out / "results.csv").read_text()
    assert "vanilla (tuned)" in results and "vanilla (recipe)" in results
    assert results.count("\n") == 1 + 4 + 4  # tuned and recipe per method, and their ensembles: no search row
    client, _, children = runs(f"sqlite:///{tmp / 'results' / 'mlflow.db'}", "study")
    phases = sorted(r.data.tags.get(tuning.PHASE_TAG) for r in children)
    assert phases.count("search") == 6 and phases.count("search+final") == 2 and phases.count("final") == 2
    status = harness("status", path)
    assert status.returncode == 0 and "14 finished" in status.stdout


@pytest.mark.slow  # two runs of a study, one killed
def test_a_killed_study_resumes_with_the_same_selection_and_no_retrained_trial(tmp_path, study_run):
    reference_dir, reference_path, reference_out = study_run
    path = study_suite(tmp_path, {"recipe": True})
    log = tmp_path / "run.log"
    proc = harness_background("run", path, log=log)
    deadline = time.time() + 300
    folder = tmp_path / "results" / "study"
    while time.time() < deadline and len(list(folder.glob(f"*/{schema.METRICS}"))) < 3:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # a preempted driver: no cleanup at all
    proc.wait(timeout=60)
    before = {p.parent.name: p.stat().st_mtime_ns for p in folder.glob(f"*/{schema.METRICS}")}
    assert 3 <= len(before) < 14
    out = harness("run", path, "--break-lock", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    after = {p.parent.name: p.stat().st_mtime_ns for p in folder.glob(f"*/{schema.METRICS}")}
    assert all(after[t] == m for t, m in before.items())  # no finished trial retrained
    assert len(after) == 14
    selected = [line for line in out.stdout.splitlines() if "validation nll" in line]
    assert selected == [line for line in reference_out.splitlines() if "validation nll" in line]  # the same selection
    again = harness("run", path, timeout=300)
    assert again.returncode == 0 and "nothing to run: all 14 trials are finished" in again.stdout
    assert json.dumps(sorted(after)) == json.dumps(
        sorted(p.name for p in folder.iterdir() if (p / "config.yaml").exists())
    )


# --- Bayesian search and ASHA (slow lane)
OPTUNA = {"search": "optuna", "trials": 4, "parallel": 2, "final_seeds": [0], "methods": {}}


@pytest.mark.slow  # three runs of a Bayesian study, one killed
def test_a_killed_bayesian_study_asks_and_selects_what_an_uninterrupted_one_does(tmp_path):
    (tmp_path / "reference").mkdir()
    reference = study_suite(tmp_path / "reference", OPTUNA, grid={"method": ["vanilla"]})
    out = harness("run", reference, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    assert "Bayesian search: Optuna's TPE, seed 0, 2 asked at a time" in out.stdout
    expected = resolved_study(load_suite(reference), str(reference))
    asked = {s: [t.trial_id for t in ts] for s, ts in expected.study.search.items()}
    assert all(len(ids) == 4 for ids in asked.values())
    path = study_suite(tmp_path, OPTUNA, grid={"method": ["vanilla"]})
    proc = harness_background("run", path, log=tmp_path / "run.log")
    folder = tmp_path / "results" / "study"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(folder.glob(f"*/{schema.METRICS}"))) < 3:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-study: the first batch told, the second asked or running
    proc.wait(timeout=60)
    before = {p.parent.name: p.stat().st_mtime_ns for p in folder.glob(f"*/{schema.METRICS}")}
    again = harness("run", path, "--break-lock", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = resolved_study(load_suite(path), str(path))
    assert {s: [t.trial_id for t in ts] for s, ts in resumed.study.search.items()} == asked  # the same asks
    assert {s: sel.chosen for s, sel in resumed.selections.items()} == {
        s: sel.chosen for s, sel in expected.selections.items()
    }
    after = {p.parent.name: p.stat().st_mtime_ns for p in folder.glob(f"*/{schema.METRICS}")}
    assert all(after[t] == m for t, m in before.items())  # no finished trial retrained
    report = harness("report", path)
    assert report.returncode == 0, report.stderr[-3000:]
    page = (folder / schema.REPORT_DIR / "index.html").read_text()
    assert "proposed by Bayesian search (Optuna" in page and "among the first n configurations" in page


@pytest.mark.slow  # an ASHA study, then the same suite without ASHA
def test_asha_stops_configurations_keeps_them_and_a_suite_without_it_resumes_them(tmp_path):
    asha = {"trials": 6, "final_seeds": [0], "methods": {}, "scheduler": "asha", "grace_epochs": 1,
            "reduction_factor": 2, "space": {"base_lr": {"loguniform": [0.001, 0.5]}}}  # fmt: skip
    base = {**SUITE["base"], "synthetic_size": 256, "val_size": 64, "width": 1, "epochs": 4}
    path = study_suite(tmp_path, asha, grid={"method": ["vanilla"]}, base=base)
    out = harness("run", path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    resolved = resolved_study(load_suite(path), str(path))
    states = resolved.selections["method=vanilla"].states
    assert states.count("stopped") >= 1 and states.count("stopped") + states.count("finished") == 6, states
    assert resolved.selections["method=vanilla"].chosen is not None
    stopped = [t for t, s in zip(resolved.study.search["method=vanilla"], states) if s == "stopped"]
    for t in stopped:
        why = json.loads((t.trial_dir / schema.STOPPED).read_text())
        assert why["by"] == "asha" and why["epoch"] in (1, 2) and len(tuning.rung_scores(t.trial_dir)) == why["epoch"]
    assert f"({len(stopped)} stopped early by ASHA)" in out.stdout
    again = harness("run", path, timeout=300)
    assert again.returncode == 0 and "nothing to run" in again.stdout  # a stopped configuration is not resumed
    report = harness("report", path)
    assert report.returncode == 0 and "missing from the report" not in report.stdout, report.stdout[-2000:]
    out_dir = tmp_path / "results" / "study" / schema.REPORT_DIR
    rungs = (out_dir / "tuning_rungs.csv").read_text().splitlines()
    assert rungs[0] == 'setting,rung (epoch),configurations compared,"Spearman rho, rung vs final",stopped at this rung'
    assert [line.split(",")[1] for line in rungs[1:]] == ["1", "2"]
    tried = (out_dir / "tuning.csv").read_text()
    assert tried.count(",stopped,") == len(stopped)
    without = study_suite(tmp_path, {**asha, "scheduler": None}, grid={"method": ["vanilla"]}, base=base)
    resumed = harness("run", without, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for t in stopped:  # resumed from its checkpoint: every epoch once, the mark gone
        assert not (t.trial_dir / schema.STOPPED).exists() and (t.trial_dir / schema.METRICS).exists()
        assert sorted(tuning.rung_scores(t.trial_dir)) == [1, 2, 3, 4]
