"""Bad configurations give clear errors that name the key and what is allowed."""

import pytest

from harness.cli import main
from harness.config import ConfigError, TrialConfig, load_trial_config


def write(tmp_path, text):
    path = tmp_path / "trial.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "method: mixmo\n",
            r"method: unknown method 'mixmo'; allowed: cut_mixmo, cutmix, linear_mixmo, mimo, mixup, vanilla",
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
            r"unknown dataset 'imagenet'; allowed: cifar10, cifar100, svhn, synthetic, tinyimagenet",
        ),
        ("widht: 4\n", r"widht: unknown key; allowed keys: .*width"),
        ("b: 3\n", r"batch_size 64 is not a multiple of b = 3"),
        ("precision: fp16\n", r"precision: Input should be 'fp32' or 'bf16'"),
        ("method: vanilla\nmsda: cutmix\n", r"for a single network use method: mixup or cutmix"),
        ("- a\n- b\n", r"expected a mapping"),
        ("workers_per_trial: 3\n", r"batch_size 64 does not split into workers_per_trial x grad_accum_steps = 3"),
        ("zero_stage: 1\n", r"zero_stage and deepspeed settings need engine: deepspeed"),
        ("engine: deepspeed\nzero_stage: 3\n", r"zero_stage: Input should be less than or equal to 2"),
        ("engine: deepspeed\ncompile: true\n", r"compile and channels_last are for engine: torch"),
        ("engine: jax\n", r"engine: Input should be 'torch' or 'deepspeed'"),
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
    assert TrialConfig().learning_rate == pytest.approx(0.05)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_trial_config(None, ["width"])


def test_trial_id_is_stable_and_ignores_where_it_runs():
    a = TrialConfig(method="mimo", width=4)
    b = TrialConfig(method="mimo", width=4, M=2, device="cpu", output_dir="elsewhere", name="other")
    c = TrialConfig(method="mimo", width=4, seed=1)
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
    base = TrialConfig(method="cut_mixmo", width=4)
    assert base.trial_id == "cut_mixmo-wrn28x4-M2-s0-" + base.trial_id.rsplit("-", 1)[1]
    assert "engine" not in base.recipe() and "workers_per_trial" not in base.recipe()
    # how a trial runs does not change its id; what it computes does
    for runtime in (
        {"workers_per_trial": 2},
        {"compile": "reduce-overhead"},
        {"loader": "ffcv"},
        {"channels_last": True},
    ):
        assert TrialConfig(method="cut_mixmo", width=4, **runtime).trial_id == base.trial_id
    for recipe in ({"engine": "deepspeed"}, {"grad_accum_steps": 2}, {"precision": "bf16"}):
        assert TrialConfig(method="cut_mixmo", width=4, **recipe).trial_id != base.trial_id
