"""harness.execution.tune_run: what Ray Tune is handed (resources per trial, a callback it can pickle) and the
study's ASHA, one per setting, replayed from the trial folders."""

import pickle
from types import SimpleNamespace

from ray.tune import PlacementGroupFactory
from ray.tune.schedulers import TrialScheduler

from harness.core import schema
from harness.execution.tune_run import StudyScheduler, SweepCallback, cause, trial_case, trial_resources
from harness.planning import tuning
from harness.planning.suite import expand, load_suite
from harness.store.files import write_csv
from harness.store.trial_folder import TrialFolder
from helpers import write_suite

TUNE = {
    "space": {"base_lr": {"loguniform": [0.01, 0.2]}},
    "trials": 4,
    "select": "nll",
    "final_seeds": [0],
}


def test_a_one_worker_trial_holds_its_resources_and_a_trial_of_workers_only_a_token(tmp_path):
    suite = load_suite(write_suite(tmp_path, resources={"cpus": 2, "gpus": 0.5}))
    one, two = expand(suite)[:2]
    request = trial_resources(suite, {one.trial_id: 0.5, two.trial_id: 0.25})  # packed: a share each

    def bundles(cfg, **keys):
        case = trial_case(cfg)
        factory = request({"case": {**case, "trial": {**case["trial"], **keys}}})
        assert isinstance(factory, PlacementGroupFactory)
        return factory.bundles

    assert bundles(one) == [{"CPU": 2, "GPU": 0.5}]
    assert bundles(two) == [{"CPU": 2, "GPU": 0.25}]
    assert bundles(one, workers_per_trial=2) == [{"memory": 1}]  # its Ray Train workers reserve their own


def test_the_callback_pickles_without_its_live_objects_and_counts_retries(capsys):
    progress = SimpleNamespace(retries={})
    callback = SweepCallback(progress, tracking=object())
    assert pickle.loads(pickle.dumps(callback)).__dict__ == {}  # Tune pickles its config with the experiment
    ray_trial = SimpleNamespace(config={"case": {"trial_id": "vanilla-x"}})
    callback.on_trial_recover(0, [], ray_trial)
    callback.on_trial_recover(0, [], ray_trial)
    assert progress.retries == {"vanilla-x": 2}
    assert capsys.readouterr().out.splitlines() == [
        "trial vanilla-x failed; retrying from its last checkpoint (retry 1)",
        "trial vanilla-x failed; retrying from its last checkpoint (retry 2)",
    ]


def test_the_trials_own_exception_is_unwrapped():
    own = ValueError("diverged")
    assert cause(SimpleNamespace(cause=own)) is own
    assert cause(own) is own


def test_asha_stops_a_configuration_against_its_own_method_only_and_remembers_earlier_runs(tmp_path):
    """One ASHA per setting (reduction factor 2: a rung keeps the better half), replayed the epochs recorded before."""

    def trial(name, history=()):
        folder = tmp_path / name
        folder.mkdir()
        if history:
            write_csv(folder / schema.HISTORY, [{"epoch": e + 1, "val_nll": v} for e, v in enumerate(history)])
        return SimpleNamespace(trial_id=name, trial_dir=folder, epochs=4)

    tune = tuning.Tune.model_validate({**TUNE, "scheduler": "asha", "grace_epochs": 1, "reduction_factor": 2})
    search = {"a": [trial("a1", [1.0]), trial("a2", [2.0]), trial("a3")], "b": [trial("b1", [9.0]), trial("b2")]}
    scheduler = StudyScheduler(SimpleNamespace(tune=tune, search=search))

    def report(name, epoch, value):
        ray_trial = SimpleNamespace(config={"case": {"trial_id": name}})
        return scheduler.on_trial_result(None, ray_trial, {"epoch": epoch, "val_nll": value})

    assert report("a3", 1, 3.0) == TrialScheduler.STOP  # worse than the rung's median, 1.5, recorded last run
    assert TrialFolder(tmp_path / "a3").state().state == "stopped"
    assert "stopped by asha after epoch 1 (val_nll 3.0000)" in TrialFolder(tmp_path / "a3").state().detail
    assert report("b2", 1, 5.0) == TrialScheduler.CONTINUE  # better than b's own 9.0, though worse than a's
    assert report("b2", 4, 99.0) == TrialScheduler.CONTINUE  # the last epoch: its evaluation follows, never stopped
    assert report("final-trial", 1, 99.0) == TrialScheduler.CONTINUE  # outside the search: runs to the end
