"""Bad configurations give clear errors that name the key and what is allowed."""

from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.core.config import ConfigError, Role, TrialConfig, is_setting_key, setting
from harness.planning.suite import expand, load_suite
from harness.tracker.mlflow_mapping import trial_params
from harness.trial.catalog import build_config, load_trial_config
from helpers import finished_trial, trial


def write(tmp_path, text):
    path = tmp_path / "trial.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "method: mixmo\n",
            r"method: unknown method 'mixmo' \(did you mean 'mimo'\?\); allowed: batch_ensemble, cut_mixmo, cutmix, "
            r"fge, linear_mixmo, masksembles, mc_dropout, mimo, mixup, packed_ensemble, snapshot, swa, swag, vanilla; "
            r"a plugin's: name its file in the suite's `plugins:` or pass --plugin FILE",
        ),
        ("method: cut_mixmo\nM: 0\n", r"M: Input should be greater than or equal to 1"),
        ("method: cut_mixmo\nM: 1\n", r"needs M >= 2 subnetworks, got 1"),
        ("method: cutmix\nM: 2\n", r"is a single network: M must be 1, got 2"),
        ("depth: 27\n", r"depth 27 does not fit the rule depth = 6n \+ 4"),
        ("width: 0\n", r"width: Input should be greater than or equal to 1"),
        ("width: 2.5\n", r"width: Input should be a valid integer"),
        ("model: resnet50\n", r"unknown model 'resnet50'; allowed: preact_resnet, wrn"),
        (
            "dataset: imagenet\n",
            r"unknown dataset 'imagenet' \(did you mean 'tinyimagenet'\?\); allowed: cifar10, cifar100, mnist, "
            r"places365, svhn, synthetic, tinyimagenet$",
        ),
        ("widht: 4\n", r"widht: unknown key \(did you mean 'width'\?\); allowed keys: .*width"),
        ("b: 3\n", r"batch_size 64 is not a multiple of b = 3"),
        ("precision: fp16\n", r"precision: Input should be 'fp32' or 'bf16'"),
        ("method: vanilla\nmsda: cutmix\n", r"for a single network use method: mixup or cutmix"),
        ("- a\n- b\n", r"expected a mapping"),
        ("workers_per_trial: 3\n", r"batch_size 64 does not split into workers_per_trial x grad_accum_steps = 3"),
        ("zero_stage: 1\n", r"zero_stage and deepspeed settings need engine: deepspeed"),
        ("engine: deepspeed\nzero_stage: 3\n", r"zero_stage: Input should be less than or equal to 2"),
        ("engine: deepspeed\ncompile: true\n", r"compile and channels_last are for engine: torch"),
        ("engine: jax\n", r"unknown engine 'jax'; allowed: deepspeed, torch"),
        ("loader: dali\n", r"loader: Input should be 'device' or 'ffcv'"),
        (
            "compile: fast\n",
            r"compile\.literal\['default','reduce-overhead','max-autotune'\]: Input should be 'default', "
            r"'reduce-overhead' or 'max-autotune'",
        ),
        ("width: [\n", r"not valid YAML"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as err:
        load_trial_config(path)
    assert str(path) in str(err.value)


def test_unsafe_yaml_tags_are_refused(tmp_path):
    path = write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_trial_config(path)


def test_overrides_and_derived_values(tmp_path):
    cfg = load_trial_config(write(tmp_path, "method: cut_mixmo\n"), ["b=4", "width=4", "lr=null"])
    assert cfg.num_inputs == 2 and cfg.b == 4 and cfg.width == 4
    assert cfg.learning_rate == pytest.approx(0.0125)  # 0.1 / (2 b)
    assert trial().learning_rate == pytest.approx(0.05)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_trial_config(None, ["width"])


def test_trial_id_is_stable_and_ignores_where_it_runs():
    a = trial(method="mimo", width=4)
    b = trial(method="mimo", width=4, M=2, device="cpu", output_dir="elsewhere", name="other")
    c = trial(method="mimo", width=4, seed=1)
    assert a.trial_id == b.trial_id != c.trial_id
    assert a.trial_id.startswith("mimo-wrn28x4-M2-s0-")


def test_cli_prints_one_clear_error_and_exits_2(tmp_path, capsys):
    assert main(["train", str(write(tmp_path, "method: nope\n"))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown method 'nope'" in err and "Traceback" not in err
    assert main(["train", "--set", "dataset=cifar100", "--data-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "cifar100 not found" in err and "Traceback" not in err


def test_keys_added_later_keep_old_trial_ids():
    base = trial(method="cut_mixmo", width=4)
    assert base.trial_id == "cut_mixmo-wrn28x4-M2-s0-" + base.trial_id.rsplit("-", 1)[1]
    assert "engine" not in base.recipe() and "workers_per_trial" not in base.recipe()
    # how a trial runs does not change its id; what it computes does
    for runtime in (
        {"workers_per_trial": 2},
        {"compile": "reduce-overhead"},
        {"loader": "ffcv"},
        {"channels_last": True},
    ):
        assert trial(method="cut_mixmo", width=4, **runtime).trial_id == base.trial_id
    for recipe in ({"engine": "deepspeed"}, {"grad_accum_steps": 2}, {"precision": "bf16"}):
        assert trial(method="cut_mixmo", width=4, **recipe).trial_id != base.trial_id


def test_every_key_declares_its_role():
    """The trial id, ensemble membership and report grouping all follow from the roles: a key without one
    would silently land in some of them."""
    missing = [k for k, f in TrialConfig.model_fields.items() if "role" not in (f.json_schema_extra or {})]
    assert not missing, f"TrialConfig keys without a role (Recipe(...), Runtime(...), ...): {missing}"
    assert {TrialConfig.role(k) for k in TrialConfig.model_fields} == set(Role)
    assert [k for k in TrialConfig.model_fields if TrialConfig.role(k) == Role.SEED] == ["seed"]


def test_roles_decide_id_ensembles_and_settings():
    base = trial(method="cut_mixmo", width=4)
    record = {**base.model_dump(mode="json"), "trial_id": base.trial_id}
    for key in set(TrialConfig.model_fields) - {"options"}:  # a method's keys enter the recipe flat (below)
        role = TrialConfig.role(key)
        assert (key in base.recipe()) == (role in (Role.RECIPE, Role.SEED, Role.HISTORY)), key
        assert is_setting_key(key) == (role in (Role.RECIPE, Role.RECIPE_IF_SET)), key
    # two seeds that differ in how they ran (loader, compile, workers) are one setting: members of one ensemble
    other = trial(method="cut_mixmo", width=4, seed=1, loader="ffcv", msda_partner="batch", compile=True)
    other_record = {**other.model_dump(mode="json"), "trial_id": other.trial_id}
    assert setting(other_record) == {**setting(record), "msda_partner": "batch"}
    assert "trial_id" not in setting(record) and "seed" not in setting(record)
    assert setting({**record, "a_key_of_an_older_version": 1})["a_key_of_an_older_version"] == 1
    # a method's own key: in the id only away from its default (written or not, the default is one trial), flat in
    # the recipe, recorded with its value even when left out, and a setting key
    packed = trial(method="packed_ensemble", depth=10, width=2, packed_gamma=3)
    assert packed.recipe()["packed_gamma"] == 3 and "options" not in packed.recipe()
    omitted = trial(method="packed_ensemble", depth=10, width=2)
    explicit = trial(method="packed_ensemble", depth=10, width=2, packed_gamma=2, packed_alpha=2.0)
    assert "packed_gamma" not in omitted.recipe() and explicit.trial_id == omitted.trial_id != packed.trial_id
    assert omitted.record()["option_defaults"] == {"packed_alpha": 2.0, "packed_gamma": 2} == explicit.option_defaults
    assert packed.record()["packed_gamma"] == 3 and is_setting_key("packed_gamma")
    assert trial_params(omitted.record())["packed_gamma"] == "2"  # MLflow: every key of the method, flat
    assert TrialConfig.from_record(omitted.record()).trial_id == omitted.trial_id  # config.yaml reads back


@pytest.mark.parametrize(
    "path, ids",
    [
        ("suites/trials/cifar100_wrn16_2_cut_mixmo.yaml", ["cut_mixmo-wrn16x2-M2-s0-1898ec16"]),
        ("suites/trials/cifar100_wrn16_2_vanilla.yaml", ["vanilla-wrn16x2-M1-s0-54263b34"]),
        (
            "suites/cifar100_robustness_cpu.yaml",
            ["cut_mixmo-wrn10x2-M2-s0-325e0b05", "cutmix-wrn10x2-M1-s0-dd65e423", "vanilla-wrn10x2-M1-s0-4bd3ee83"],
        ),
        (
            "suites/quickstart.yaml",
            [
                "cut_mixmo-wrn10x1-M2-s0-b1cdfaa7",
                "cut_mixmo-wrn10x2-M2-s0-23f0a954",
                "cutmix-wrn10x1-M1-s0-7b9e2aaa",
                "cutmix-wrn10x1-M1-s1-0fbf6b1b",
                "cutmix-wrn10x2-M1-s0-c486d0df",
                "cutmix-wrn10x2-M1-s1-561c52fb",
                "linear_mixmo-wrn10x1-M2-s0-e9f1bcf1",
                "linear_mixmo-wrn10x2-M2-s0-c072cab2",
                "mimo-wrn10x1-M2-s0-250ecbf4",
                "mimo-wrn10x2-M2-s0-6f5fa112",
                "mixup-wrn10x1-M1-s0-edcf4ebf",
                "mixup-wrn10x2-M1-s0-2c6fa0db",
                "vanilla-wrn10x1-M1-s0-3fd59775",
                "vanilla-wrn10x2-M1-s0-1d1c781d",
            ],
        ),
    ],
)
def test_shipped_trial_ids_are_pinned(path, ids):
    """Golden ids: a change to the id's inputs (a new key, a role, the hash) would orphan every result folder."""
    root = Path(__file__).parents[2]
    if "/trials/" in path:
        got = [load_trial_config(root / path).trial_id]
    else:
        got = sorted(t.trial_id for t in expand(load_suite(root / path)))
    assert got == ids


def test_the_family_methods_trial_ids_are_pinned():
    """The four family methods' keys moved from TrialConfig into their own files: their ids did not move, but
    where a method's revision did (Packed-Ensembles' default gamma became the reference's 2; BatchEnsemble's
    classifier biases learn at half the lr), and where the suite writes a key at its default (Masksembles'
    mask_scale 2.0, MC-Dropout's dropout 0.1, Packed-Ensembles' alpha 2.0 and gamma 2): those ids are now the
    ids of the same trials with the key left out, one computation, one trial (this suite has not been run)."""
    trials = expand(load_suite(Path(__file__).parents[2] / "suites/cifar100_ensembles_family.yaml"))
    family = ("batch_ensemble", "masksembles", "mc_dropout", "packed_ensemble")
    got = sorted(t.trial_id for t in trials if t.seed == 0 and t.method in family)
    assert got == [
        "batch_ensemble-wrn28x10-M4-s0-8f3b3503",
        "masksembles-wrn28x10-M4-s0-3526e1c4",  # 74f35b2c with mask_scale 2.0 hashed
        "mc_dropout-wrn28x10-M30-s0-3c9bfd31",  # 7555d5d4 with dropout 0.1 hashed
        "packed_ensemble-wrn28x10-M4-s0-e3b2ee06",  # 46620b5a with packed_alpha 2.0, packed_gamma 2 hashed
    ]


@pytest.mark.parametrize(
    "keys",
    [{}, {"lr": 0.05}, {"lr": 0.025, "b": 2}, {"lr": 0.3}, {"b": 2}, {"method": "cut_mixmo", "M": 3}],
)
def test_from_record_is_the_inverse_of_record(keys):
    """config.yaml keeps the resolved lr: an explicit lr equal to base_lr / b (another trial id) and an unset one
    both come back as they were set."""
    cfg = build_config({"width": 2, **keys}, "test")
    back = TrialConfig.from_record(cfg.record())
    assert back == cfg and back.lr == keys.get("lr") and back.trial_id == cfg.trial_id


def test_status_reads_an_explicit_lr_back(tmp_path):
    from harness.execution.status import trials_in_folder

    cfg = trial(dataset="synthetic", synthetic_classes=4, width=1, lr=0.05, output_dir=tmp_path, name="s")
    finished_trial(cfg, np.eye(4)[np.arange(8) % 4][:, None], np.arange(8) % 4)
    ((read, folder),) = trials_in_folder(tmp_path / "s")[0]
    assert read.lr == 0.05 and read.trial_id == cfg.trial_id == folder.name
