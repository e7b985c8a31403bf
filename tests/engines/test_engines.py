"""harness.engines: an engine is one file, registered by its decorator: a plugin's engine trains a trial, its code
enters the trial id, and an unknown engine is named with those allowed."""

import textwrap

import pytest

from harness.core import plugins
from harness.core.config import ConfigError
from harness.engines import ENGINES
from harness.trial.trainer import Trainer
from helpers import tiny_config

COUNTING = textwrap.dedent('''
    from harness.engines import register_engine
    from harness.engines.torch_engine import TorchEngine

    @register_engine("counting")
    class CountingEngine(TorchEngine):
        """The torch engine, counting its optimizer steps."""

        steps = 0

        def backward(self, loss, boundary):
            super().backward(loss, boundary)
            CountingEngine.steps += boundary
''')


def test_a_plugins_engine_trains_a_trial_and_its_code_is_part_of_the_trial_id(tmp_path):
    path = tmp_path / "counting.py"
    path.write_text(COUNTING)
    plugin = plugins.load(str(path))
    try:
        cfg = tiny_config(engine="counting", epochs=1, output_dir=tmp_path)
        assert cfg.plugin_code == {"engine counting": plugin.sha256}
        assert cfg.trial_id != tiny_config(epochs=1, output_dir=tmp_path).trial_id
        metrics = Trainer(cfg).run()
        assert ENGINES.get("counting").steps == metrics["train_images"] // cfg.batch_size > 0  # one epoch's steps
    finally:
        plugins.unload(plugin)


def test_the_built_in_engines_are_registered_and_an_unknown_one_is_refused():
    assert ENGINES.names() == ["deepspeed", "torch"] and ENGINES.source("torch") is None
    with pytest.raises(ConfigError, match=r"engine: unknown engine 'jax'; allowed: deepspeed, torch"):
        tiny_config(engine="jax")


def test_placement_and_prediction_ask_the_trial_engine(tmp_path):
    """The weights' dtype, bf16 autocast and NHWC are the engine's: a plugin's engine built on the torch engine
    predicts as it trains (under bf16 autocast, float32 weights), DeepSpeed in bf16 weights, dense."""
    import torch

    from harness.engines import Inference, place_model, weight_dtype
    from harness.models import build_model

    path = tmp_path / "counting.py"
    path.write_text(COUNTING)
    plugin = plugins.load(str(path))
    try:
        cpu = torch.device("cpu")
        for engine, dtype, autocast, nhwc in (
            ("counting", torch.float32, True, True),
            ("torch", torch.float32, True, True),
            ("deepspeed", torch.bfloat16, False, False),
        ):
            nhwc_asked = True if engine != "deepspeed" else None  # DeepSpeed refuses the key: dense parameters
            cfg = tiny_config(engine=engine, precision="bf16", channels_last=nhwc_asked, output_dir=tmp_path)
            model = place_model(cfg, build_model(cfg, 4), cpu)
            weight = next(p for p in model.parameters() if p.dim() == 4)
            assert weight_dtype(cfg) == weight.dtype == dtype, engine
            assert weight.is_contiguous(memory_format=torch.channels_last) == nhwc, engine
            assert Inference(cfg, model, cpu).autocast == autocast, engine
    finally:
        plugins.unload(plugin)
