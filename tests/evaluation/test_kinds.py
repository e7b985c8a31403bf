"""harness.evaluation.kinds: a kind is one file (its names, its checks, its evaluation); evaluation records are
checked against their kind."""

import textwrap

import numpy as np
import pytest

from harness.core import plugins, schema
from harness.data import DataError
from harness.data.eval_sets import TrialData
from harness.evaluation.evaluate import evaluate_trial
from harness.evaluation.kinds import allowed_names, check_eval_set, parse_eval_set, record_problem
from harness.store.trial_folder import TrialFolder
from harness.trial.trainer import Trainer
from helpers import finished_trial, tiny_config, trial

NOISE = textwrap.dedent('''
    """Uniform-noise images at a given scale (noise:SCALE): how often the network still answers class 0."""

    import numpy as np

    from harness.data import DataError
    from harness.data.datasets import ImageArrays
    from harness.data.eval_sets import EvalSet, TrialData
    from harness.evaluation.kinds import KINDS, EvalKind


    class NoiseKind(EvalKind):
        fields = {"class0": float}
        order = 3

        def parse(self, text, name, path):
            if not name.startswith("noise:"):
                return None
            if not name[6:].isdigit():
                raise ValueError(f"{text!r}: noise:SCALE takes a whole number")
            return EvalSet(text, "noise", name[6:], f"noise-{name[6:]}")

        def names(self):
            return ["noise:SCALE"]

        def check(self, spec, trial):
            if int(spec.source) > 255:
                raise DataError(f"{spec.name}: pixels stop at 255")

        def fingerprint(self, spec, cfg):
            return None

        def evaluate(self, folder, cfg, spec, network):
            side = TrialData.of(cfg).resolution
            x = np.random.default_rng(0).integers(0, int(spec.source) + 1, (16, side, side, 3), dtype=np.uint8)
            heads = network.predict(ImageArrays(x, np.zeros(16, np.int64)))
            return {"class0": float((heads.mean(1).argmax(-1) == 0).float().mean())}

        def headline(self, record):
            return f"class 0 on noise: {record['class0']:.2f}"

        def metrics(self, record):
            return {"class0": record["class0"]}


    KINDS.register("noise")(NoiseKind())
''')


def test_a_plugins_kind_is_one_file_its_names_parsed_listed_checked_and_evaluated(tmp_path):
    path = tmp_path / "noise.py"
    path.write_text(NOISE)
    plugin = plugins.load(str(path))
    try:
        spec = parse_eval_set("noise:40")
        assert (spec.kind, spec.source, spec.id) == ("noise", "40", "noise-40")
        assert allowed_names().startswith("test, ") and allowed_names().endswith(", noise:SCALE")
        with pytest.raises(ValueError, match="noise:SCALE takes a whole number"):
            parse_eval_set("noise:loud")
        with pytest.raises(ValueError, match="unknown evaluation set; allowed: test, .*, noise:SCALE"):
            parse_eval_set("nois:40")
        cfg = tiny_config(epochs=1, output_dir=tmp_path)
        with pytest.raises(DataError, match="noise:300: pixels stop at 255"):
            check_eval_set(parse_eval_set("noise:300"), TrialData.of(cfg))
        Trainer(cfg).run()
        record = evaluate_trial(cfg, [spec], "cpu")["noise-40"]
        assert record["kind"] == "noise" and 0 <= record["class0"] <= 1
        assert list(TrialFolder(cfg.trial_dir).evaluations(record_problem)) == ["noise-40"]
    finally:
        plugins.unload(plugin)
    with pytest.raises(ValueError, match="unknown evaluation set"):
        parse_eval_set("noise:40")


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
