"""Training cost estimates from FLOP counts (torch's FLOP counter on the meta device: no compute)."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from harness.core.config import TrialConfig

# Effective training throughput used to turn FLOPs into GPU-hours: WRN-28-10 Cut-MixMo, bf16, compiled
# with CUDA graphs, batch 64, ran 7,846 samples/s on one H100 at 35.7 GFLOP per sample
# (benchmarks/README.md): ~280 TFLOP/s.
REFERENCE_TFLOPS = 280.0
# The same for one CPU core, end to end (data, steps, evaluation): the quickstart suite, 101 TFLOP of
# training, ran in 598 s on a 2-core machine (docs/results.md); WRN-16-2 on full CIFAR-100 gave 104 on one core.
CPU_GFLOPS_PER_CORE = 85.0


def _measure(
    model: str,
    depth: int,
    width: int,
    num_inputs: int,
    num_classes: int,
    resolution: int,
    train: bool,
    method: str = "vanilla",
    options: tuple = (),
    row: tuple = (1, 1),
    members: int = 0,
) -> dict[str, float]:
    """One pass of the method's network on the meta device (no compute): FLOPs of a sample (a training step per
    image of the batch, forward + backward; or a test image, forward: the same image to all M members), the
    parameters, and (training) the activation values per image: every module's output, the values autograd keeps
    for the backward, to a first order."""
    from torch.utils.flop_counter import FlopCounterMode

    from harness.methods import METHODS
    from harness.models import build_network

    kind = METHODS.get(method)
    slots, images = row
    values = [0]
    with torch.device("meta"):
        net = build_network(model, depth, width, num_classes, num_inputs, kind.network, dict(options), members)
        net.train(train)
        x = torch.empty(1, *((slots,) if train else ()), 3, resolution, resolution)
    leaves = [m for m in net.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda _m, _i, out: values.append(_numel(out))) for m in leaves]
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            net(x)
    except Exception as err:  # a network that reads values (`.item()`, data-dependent shapes) in its forward
        from harness.core.config import ConfigError
        from harness.models import MODELS

        where = MODELS.source(model) or METHODS.source(method)
        why = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:160]}"
        raise ConfigError(
            f"{'plugin ' + where.spec if where else 'the harness'}: model {model!r} with method {method!r} cannot run "
            f"on the meta device, where the plan counts its FLOPs ({why}); a network's forward must not read tensor "
            "values (no .item(), .tolist(), data-dependent shapes or Python branches on values)"
        ) from None
    for h in hooks:
        h.remove()
    # a training step: forward + backward = 3 x the forward (the backward's two products per layer); counted, torch's
    # counter would charge a grouped convolution's backward as if ungrouped (Packed-Ensembles: 2x too much)
    return {
        "flops": float(counter.get_total_flops()) * (3 / images if train else 1),
        "params": float(sum(p.numel() for p in net.parameters())),
        "activations": sum(values) / images,
    }


def _numel(out) -> int:
    if isinstance(out, torch.Tensor):
        return out.numel()
    return sum(_numel(o) for o in out) if isinstance(out, (tuple, list)) else 0


@functools.lru_cache(maxsize=None)
def _measured(*shape) -> dict[str, float]:
    """``_measure`` once per shape: in this process, and on disk across processes (a plan of 10,000 trials takes
    seconds), keyed by the code that builds the networks."""
    from harness.methods import METHODS
    from harness.models import MODELS

    if METHODS.source(shape[7]) or MODELS.source(shape[0]):  # a plugin's code is not in the cache's key
        return _measure(*shape)
    key = json.dumps(shape)
    cache = _disk_cache()
    if not _valid_count(cache.get(key)):  # missing, or an entry of the wrong shape: counted again, never used
        cache[key] = _measure(*shape)
        _save_cache(cache)
    return cache[key]


def _valid_count(entry) -> bool:
    """A cached count: flops, params and activations, each a finite non-negative number."""
    return (
        isinstance(entry, dict)
        and set(entry) == {"flops", "params", "activations"}
        and all(type(v) in (int, float) and 0 <= v < float("inf") for v in entry.values())
    )


@functools.lru_cache(maxsize=1)
def _cache_path() -> Path:
    """<user cache>/cost-<hash of harness/models and harness/methods>.json (harness.store.filesystems.user_cache)"""
    import hashlib

    package = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted([*package.glob("models/*.py"), *package.glob("methods/*.py")]):
        digest.update(path.name.encode() + path.read_bytes())
    from harness.store.filesystems import user_cache

    return user_cache() / f"cost-{digest.hexdigest()[:16]}-torch{torch.__version__}.json"


@functools.lru_cache(maxsize=1)
def _disk_cache() -> dict:
    try:
        cache = json.loads(_cache_path().read_text())
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict) -> None:
    """Merged with what the file holds now: other processes (concurrent plans, test runs) add their shapes too."""
    try:
        from harness.store.files import write_json

        try:
            on_disk = json.loads(_cache_path().read_text())
        except (OSError, ValueError):
            on_disk = {}
        cache.update({k: v for k, v in on_disk.items() if k not in cache} if isinstance(on_disk, dict) else {})
        write_json(_cache_path(), cache)
    except OSError:  # a read-only home: the cache is only a cache
        pass


def training_memory(cfg: TrialConfig) -> dict[str, float]:
    """Bytes a trial needs while it trains, estimated: fp32 weights, their gradients and SGD's momentum, and the
    activations of one batch (2 bytes a value under bf16/fp16 autocast, else 4). Not counted: the framework's own
    workspace and the data (the device loader keeps the uint8 training set there too)."""
    classes, res = dataset_shape(cfg.dataset, cfg.synthetic_classes, cfg.synthetic_resolution)
    measured = _measured(cfg.model, cfg.depth, cfg.width, cfg.num_inputs, cfg.class_subset or classes, res, True,
                         *_network(cfg))  # fmt: skip
    params, per_image = measured["params"], measured["activations"]
    members = _network(cfg)[3]
    trained = params / members if members > 1 else params  # weight-state members: frozen copies, no grads
    half = cfg.precision in ("bf16", "fp16")
    out = {"weights": 4.0 * params, "optimizer": 8.0 * trained, "activations": per_image * cfg.batch_size * (2 if half
           else 4)}  # fmt: skip
    out["total"] = sum(out.values())
    return out


def _network(cfg: TrialConfig) -> tuple:
    from harness.methods import METHODS

    method = METHODS.get(cfg.method)
    options = tuple(sorted(method.network_options(cfg).items()))
    return cfg.method, options, tuple(method.train_row(cfg)), method.weight_members(cfg)


def step_flops_per_sample(cfg: TrialConfig, num_classes: int, resolution: int) -> float:
    """FLOPs of one training step (forward + backward) per image of the batch."""
    return _measured(cfg.model, cfg.depth, cfg.width, cfg.num_inputs, num_classes, resolution, True, *_network(cfg))[
        "flops"
    ]


def inference_flops_per_image(cfg: TrialConfig, num_classes: int, resolution: int) -> float:
    """FLOPs of one test image through the network (forward only; all M members)."""
    return _measured(cfg.model, cfg.depth, cfg.width, cfg.num_inputs, num_classes, resolution, False, *_network(cfg))[
        "flops"
    ]


def dataset_shape(dataset: str, synthetic_classes: int = 10, synthetic_resolution: int = 32) -> tuple[int, int]:
    """(classes, image side) of a registered dataset (its spec)."""
    from harness.data.datasets import DATASETS

    return DATASETS.get(dataset).shape(synthetic_classes, synthetic_resolution)


def trial_flops(cfg: TrialConfig) -> float:
    classes, res = dataset_shape(cfg.dataset, cfg.synthetic_classes, cfg.synthetic_resolution)
    classes = cfg.class_subset or classes
    per_sample = step_flops_per_sample(cfg, classes, res)
    return trial_steps(cfg) * cfg.batch_size * per_sample


def trial_steps(cfg: TrialConfig) -> int:
    """Optimizer steps of a whole trial."""
    from harness.data.datasets import DATASETS

    spec = DATASETS.get(cfg.dataset)
    n_train = spec.train_size or cfg.synthetic_size
    classes = spec.shape(cfg.synthetic_classes)[0]
    if cfg.class_subset:  # balanced datasets: the kept classes' share of the images
        n_train = n_train * cfg.class_subset // classes
    n_train = min(n_train - cfg.val_size, cfg.train_subset or n_train)
    per_epoch = n_train * cfg.b / cfg.batch_size  # the loader drops a last partial batch unless drop_last is off
    return (max(1, math.floor(per_epoch)) if cfg.drop_last else math.ceil(per_epoch)) * cfg.epochs


def format_flops(flops: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            return f"{flops / scale:.1f} {unit}"
    return f"{flops:.0f} FLOP"
