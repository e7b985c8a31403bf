"""harness.tracker.mlflow_mapping: what MLflow receives of a trial folder, checked against MLflow itself (a real
sqlite store accepts every name and value, and its search parser reads the quoted suite names back)."""

import json

import numpy as np
import pytest
from mlflow.entities import Metric, Param, RunTag

from harness.core import schema
from harness.store.trial_folder import TrialFolder
from harness.tracker import mlflow_mapping as mapping
from helpers import finished_trial, new_store, tiny_config


@pytest.fixture
def trial_folder(tmp_path):
    cfg = tiny_config(method="cut_mixmo", output_dir=tmp_path / "results")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 50)
    return cfg, finished_trial(cfg, rng.normal(size=(50, cfg.M, 10)), labels)


def test_tags_say_what_the_run_is_and_only_a_plugin_trial_carries_plugin_tags(trial_folder):
    cfg, _ = trial_folder
    tags = mapping.trial_tags(cfg.record(), "synth", "parent123")
    assert tags["mlflow.parentRunId"] == "parent123" and tags[mapping.SUITE_TAG] == "synth"
    assert tags[mapping.ROLE_TAG] == "trial" and tags["trial_id"] == cfg.trial_id and tags["M"] == str(cfg.M)
    assert "harness.plugins" not in tags
    record = {**cfg.record(), "plugins": ["/p/regmixup.py"], "plugin_code": {"method regmixup": "ab" * 32}}
    tags = mapping.trial_tags(record, "synth", "p")
    assert tags["harness.plugins"] == "/p/regmixup.py"
    assert json.loads(tags["harness.plugin_code"]) == {"method regmixup": "ab" * 32}


def test_params_are_the_config_with_defaults_flat_and_lists_as_json():
    params = mapping.trial_params({"width": 2, "milestones": [101, 201], "option_defaults": {"dropout": 0.1}})
    assert params == {"dropout": "0.1", "milestones": "[101, 201]", "option_defaults": '{"dropout": 0.1}', "width": "2"}
    assert mapping.trial_params({"dropout": 0.3, "option_defaults": {"dropout": 0.1}})["dropout"] == "0.3"


def test_metrics_leave_out_facts_empty_cells_and_what_mlflow_cannot_hold():
    rows = [{"epoch": "1", "train_loss": "2.5", "test_top1": ""}, {"epoch": "2", "train_loss": "2.0", "lr": "0.1"}]
    assert mapping.epoch_metrics(rows) == [("train_loss", 2.5, 1), ("train_loss", 2.0, 2), ("lr", 0.1, 2)]
    final = {"top1": 0.5, "nll": float("inf"), "ece": float("nan"), "trial_id": "x", "workers": 1, "flag": True}
    assert schema.FACTS and "workers" in schema.FACTS
    assert mapping.final_metrics(final) == {"final_top1": 0.5}
    assert [mapping.finite_number(v) for v in (1, 0.5, True, "1", float("nan"), -float("inf"))] == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]


def test_a_real_store_accepts_everything_a_trial_folder_maps_to(tmp_path, trial_folder):
    cfg, path = trial_folder
    folder = TrialFolder(path)
    client = new_store(tmp_path / "mlflow.db")
    run = client.create_run(client.create_experiment("synth")).info.run_id
    tags = mapping.trial_tags(cfg.record(), "synth", run)
    params = mapping.trial_params(cfg.record())
    final = mapping.final_metrics(folder.metrics())
    client.log_batch(
        run,
        metrics=[Metric(k, v, 0, 0) for k, v in final.items()],
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items() if k != "mlflow.parentRunId"],
    )
    data = client.get_run(run).data
    assert data.params == params and data.metrics == final
    assert {k: data.tags[k] for k in tags if k != "mlflow.parentRunId"} == {
        k: v for k, v in tags.items() if k != "mlflow.parentRunId"
    }
    assert len(final) > 10 and "final_top1" in final


def test_quoted_suite_names_are_read_back_by_mlflows_search_parser(tmp_path):
    client = new_store(tmp_path / "mlflow.db")
    experiment = client.create_experiment("e")
    names = ["plain", "it's", "back\\slash", 'say "it" \\ twice']
    for name in names:
        client.create_run(experiment, tags={mapping.SUITE_TAG: name})
    for name in names:
        found = client.search_runs([experiment], f"tags.`{mapping.SUITE_TAG}` = {mapping.quoted(name)}")
        assert [r.data.tags[mapping.SUITE_TAG] for r in found] == [name]
    with pytest.raises(ValueError, match="no literal for a value with both kinds of quote"):
        mapping.quoted('it\'s "both"')
