"""Engines and data-parallel trials: the torch and DeepSpeed engines agree, N workers (Ray Train, gloo)
compute what one worker computes on the same global batch, and multi-worker trials resume."""

import csv
import json
import os

import pytest
import torch

from harness.core import schema
from harness.core.parallel import World, shard
from harness.engines.deepspeed_config import deepspeed_config
from harness.store.files import load_checkpoint, read_json
from harness.trial.launch import run_on_workers
from harness.trial.trainer import Trainer
from helpers import FAULTS, tiny_config

FAULT = "raise@1@faulty"  # raise after epoch 1 in trials whose folder path contains "faulty"


def history(cfg):
    return list(csv.DictReader(open(cfg.trial_dir / schema.HISTORY)))


def weights(cfg):
    return load_checkpoint(cfg.trial_dir / schema.CHECKPOINT)["model"]


def assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=atol), key


def test_shards_cover_the_batch_in_order():
    assert shard(64, World(0, 2), 2) == [slice(0, 16), slice(16, 32)]
    assert shard(64, World(1, 2), 2) == [slice(32, 48), slice(48, 64)]
    assert shard(12, World(3, 4)) == [slice(9, 12)]


def test_deepspeed_config_comes_from_the_recipe(tmp_path):
    cfg = tiny_config(
        engine="deepspeed",
        zero_stage=2,
        precision="bf16",
        batch_size=64,
        grad_accum_steps=2,
        workers_per_trial=2,
        deepspeed={"zero_optimization": {"overlap_comm": True}, "steps_per_print": 5},
    )
    conf = deepspeed_config(cfg, world_size=2)
    assert conf["train_batch_size"] == 64 and conf["train_micro_batch_size_per_gpu"] == 16
    assert conf["gradient_accumulation_steps"] == 2 and conf["bf16"] == {"enabled": True}
    assert conf["zero_optimization"] == {"stage": 2, "overlap_comm": True}  # raw settings merged over the generated
    assert conf["steps_per_print"] == 5 and conf["gradient_clipping"] == 0.0


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
@pytest.mark.parametrize("accum", [1, 2])
def test_torch_and_deepspeed_engines_agree_on_one_worker(tmp_path, accum):
    runs = {}
    for engine in ("torch", "deepspeed"):
        cfg = tiny_config(
            method="cut_mixmo", b=2, epochs=2, engine=engine, grad_accum_steps=accum, output_dir=tmp_path / engine
        )
        metrics = Trainer(cfg).run()
        runs[engine] = cfg
        assert metrics["engine"] == engine and metrics["workers"] == 1
    torch_cfg, ds_cfg = runs["torch"], runs["deepspeed"]
    assert_same_weights(weights(torch_cfg), weights(ds_cfg), atol=1e-6)
    assert [r["train_loss"] for r in history(torch_cfg)] == [r["train_loss"] for r in history(ds_cfg)]
    written = json.loads((ds_cfg.trial_dir / "deepspeed_config.json").read_text())
    assert written["train_batch_size"] == 32 and written["gradient_accumulation_steps"] == accum


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray of 2 CPUs whose workers inject FAULT (only 'faulty' trial folders are hit)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from harness.core import plugins
    from harness.trial.trainer import Trainer

    plain_run = Trainer.run
    faults = plugins.load(str(FAULTS.resolve()))  # shipped to the Ray Train workers with each trial, as any plugin
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"HARNESS_TEST_FAULT": FAULT}},
    )
    yield
    ray.shutdown()
    Trainer.run = plain_run  # the other tests of this process train without it
    plugins.unload(faults)


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
@pytest.mark.parametrize("engine, zero_stage", [("torch", 0), ("deepspeed", 1)])
def test_two_workers_match_one_worker_with_the_same_global_batch(tmp_path, ray_cluster, engine, zero_stage):
    one = tiny_config(
        method="cut_mixmo",
        b=2,
        epochs=1,
        synthetic_size=128,
        engine=engine,
        zero_stage=zero_stage,
        output_dir=tmp_path / "one",
    )
    Trainer(one).run()
    two = one.model_copy(update={"workers_per_trial": 2, "output_dir": tmp_path / "two"})
    assert two.trial_id == one.trial_id  # the worker count does not change what is computed
    run_on_workers(two)
    assert read_json(two.trial_dir / schema.METRICS)["workers"] == 2
    # 8 steps, fp32: batch norm over the global batch and averaged gradients leave float rounding only
    assert_same_weights(weights(one), weights(two), atol=1e-5)
    assert float(history(two)[0]["train_loss"]) == pytest.approx(float(history(one)[0]["train_loss"]), rel=1e-5)


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
@pytest.mark.parametrize("engine, zero_stage, precision", [("torch", 0, "fp32"), ("deepspeed", 1, "bf16")])
def test_two_worker_trial_learns_and_resumes_from_its_checkpoint(tmp_path, ray_cluster, engine, zero_stage, precision):
    base = dict(
        method="cut_mixmo",
        b=2,
        epochs=3,
        lr=0.05,
        synthetic_size=256,
        engine=engine,
        zero_stage=zero_stage,
        precision=precision,
        workers_per_trial=2,
    )
    clean = tiny_config(**base, output_dir=tmp_path / "clean")
    run_on_workers(clean)
    faulty = tiny_config(**base, output_dir=tmp_path / "faulty")
    with pytest.raises(Exception, match="injected test fault"):
        run_on_workers(faulty)  # fails after epoch 1's checkpoint
    assert [int(r["epoch"]) for r in history(faulty)] == [1]
    assert not (faulty.trial_dir / schema.METRICS).exists()
    if engine == "deepspeed":
        assert sorted(p.name for p in (faulty.trial_dir / "deepspeed").glob("epoch*")) == ["epoch1"]
    run_on_workers(faulty)  # the same command again: resumes after epoch 1
    rows = history(faulty)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]  # no gap, no repeated epoch
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0]
    assert read_json(faulty.trial_dir / schema.METRICS)["top1"] > 0.4  # 4 classes: chance 0.25
    # resuming restores weights, optimizer state (DeepSpeed: its fp32 master weights) and RNG streams
    assert_same_weights(weights(clean), weights(faulty), atol=1e-6)
    assert [r["train_loss"] for r in history(clean)] == [r["train_loss"] for r in rows]


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_a_suite_of_two_worker_trials_runs_through_harness_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from helpers import harness, write_suite

    suite = write_suite(
        tmp_path,
        base={"workers_per_trial": 2, "epochs": 2},
        grid={"method": ["cut_mixmo"], "width": [1]},  # one trial: each starts Ray Train workers of its own
        concurrency=1,
    )
    proc = harness("run", suite)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 finished" in proc.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("synth").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 1
    for run in children:
        assert run.data.params["workers_per_trial"] == "2" and run.data.tags["workers_per_trial"] == "2"
        assert run.data.tags["harness.workers"] == "2" and "final_workers" not in run.data.metrics
        assert client.get_metric_history(run.info.run_id, "train_loss")[-1].step == 2  # per-epoch rows reached MLflow
