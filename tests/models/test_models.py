import pytest
import torch

from harness.models import MODELS, count_parameters
from helpers import trial


def on_meta(name, *shape):
    """A network with no storage (parameter counts and layout without allocating or initialising)."""
    with torch.device("meta"):
        return MODELS.get(name).build(*shape)


def test_wrn_28_10_parameter_counts_match_the_authors():
    assert count_parameters(on_meta("wrn", 28, 10, 100, 1)) == 36_536_884  # "about 36.5 M"
    assert count_parameters(on_meta("wrn", 28, 10, 100, 2)) == 36_601_416  # printed by the authors' model


@pytest.mark.parametrize("M", [1, 2, 3])
def test_output_shapes(M):
    torch.manual_seed(0)
    model = MODELS.get("wrn").build(16, 2, 100, M)
    assert model(torch.randn(5, M, 3, 32, 32)).shape == (5, M, 100)
    assert model(torch.randn(5, 3, 32, 32)).shape == (5, M, 100)  # test time: same image to every encoder
    assert model.mix_size(32) == 32  # mixing on 16 x 32 x 32 features
    model = MODELS.get("preact_resnet").build(18, 1, 200, M)
    assert model(torch.randn(2, M, 3, 64, 64)).shape == (2, M, 200)
    assert model.mix_size(64) == 32  # stride-2 stem: mixing on 64 x 32 x 32 features
    assert model.encoders.out_channels == 64 * M


def test_wrn_layout_and_init():
    model = on_meta("wrn", 28, 10, 100, 2)
    blocks = [m for m in model.core if m.__class__.__name__ == "WideBasicBlock"]
    assert len(blocks) == 12
    assert [b.conv2.out_channels for b in blocks[::4]] == [160, 320, 640]
    strided = blocks[4]
    assert strided.conv1.stride == (1, 1) and strided.conv2.stride == (2, 2) and strided.conv2.padding == (0, 0)
    assert all(not isinstance(m, torch.nn.Conv2d) or m.bias is None for m in model.modules())
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    torch.manual_seed(0)
    model = MODELS.get("wrn").build(28, 4, 100, 2)  # the initialisation, on a narrower WRN-28
    blocks = [m for m in model.core if m.__class__.__name__ == "WideBasicBlock"]
    w = blocks[5].conv1.weight  # fan-in 64 * 9: He std sqrt(2 / 576), truncated at 2 std
    std = (2 / w[0].numel()) ** 0.5
    assert w.abs().max() <= 2 * std / 0.8796 + 1e-6  # truncated at 2 std of the pre-truncation normal
    assert abs(w.std().item() / std - 1) < 0.03  # the truncated draw has He's std (tests/methods/test_parity.py: 2%)
    # encoders: one 3x3 conv (3 -> 16) per input, no cross-talk between inputs
    x = torch.randn(2, 2, 3, 32, 32)
    x2 = x.clone()
    x2[:, 1] = torch.randn(2, 3, 32, 32)
    e1 = model.encoders(x.reshape(2, 6, 32, 32))[:, :16]
    e2 = model.encoders(x2.reshape(2, 6, 32, 32))[:, :16]
    assert torch.equal(e1, e2)


def test_preact_resnet_18_width_scales_parameters_quadratically():
    counts = [count_parameters(on_meta("preact_resnet", 18, w, 200, 1)) for w in (1, 2, 3)]
    assert 11_000_000 < counts[0] < 11_500_000  # the standard PreActResNet-18 size
    assert 3.8 < counts[1] / counts[0] < 4.1 and 8.5 < counts[2] / counts[0] < 9.1


def test_shape_rules():
    with pytest.raises(ValueError, match="6n \\+ 4"):
        MODELS.get("wrn").check_shape(27, 10)
    with pytest.raises(ValueError, match="depth 18 only"):
        MODELS.get("preact_resnet").check_shape(34, 1)


def test_inference_flops_are_a_third_of_a_training_step():
    from harness.trial.cost import inference_flops_per_image, step_flops_per_sample

    cfg = trial(method="mimo", depth=28, width=10, M=2)
    forward = inference_flops_per_image(cfg, 100, 32)
    assert forward == pytest.approx(35.7e9 / 3, rel=0.01)  # the M = 2 step: 35.7 GFLOP per sample, forward + backward
    assert step_flops_per_sample(cfg, 100, 32) / forward == pytest.approx(3.0, rel=1e-3)  # fwd + 2x bwd
