"""Typed trial configuration: validated once at the edge, then passed around as an object.

Defaults are the paper's CIFAR recipe (docs/recipe.md §5); every key can be set in a
YAML file or overridden with ``--set key=value``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import PydanticUndefined


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the file."""


# Strict numbers and booleans: `width: '2'` or `width: true` is an error, not a silent coercion; paths
# stay lax (a YAML string is a path). inf and nan are refused everywhere.
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def expand_path(value):
    """``~`` and ``$VARIABLES`` in a path expanded (a variable that is not set is an error, not a folder name)."""
    if not isinstance(value, (str, Path)):
        return value
    text = os.path.expanduser(os.path.expandvars(str(value)))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)
    if unset:
        raise ValueError(f"{value}: ${unset[0]} is not set in the environment")
    return text


LaxPath = Annotated[Path, BeforeValidator(expand_path), Field(strict=False)]
# Bumped when the code computes something else for the same keys, so that older results are never resumed
# or averaged with newer ones (2: the authors' initialisation, PreActResNet, schedule edges and MSDA
# partners; docs/recipe.md).
RECIPE_VERSION = 2
# a single folder name: letters, digits, _ - and single dots (no '..' anywhere, no '/'); at most 100 characters
NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.?$"
NAME_LENGTH = 100
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:[0-9]+)$"
PATTERN_HELP = {
    NAME_PATTERN: "a single folder name (letters, digits, _ and -, single dots between them; no '..' or '/')",
    DEVICE_PATTERN: "a device: auto, cpu, cuda or cuda:N",
}


class Role(str, Enum):
    """What a trial key is to the result. Every TrialConfig field declares one (Recipe(...), Runtime(...), ...);
    the trial id, deep-ensemble membership and the report's settings are all derived from it."""

    RECIPE = "recipe"  # determines the result: in the trial id; an ensemble's members and a report row share it
    RECIPE_IF_SET = "recipe_if_set"  # added after results existed: in the id only away from its default
    SEED = "seed"  # in the id; the one key an ensemble's members (and a row's repeats) differ in
    HISTORY = "history"  # changes the recorded history, not the final result: in the id, never splits a setting
    RUNTIME = "runtime"  # where or how a trial runs, not what it computes: out of the id


def _keyed(role: Role):
    def field(default: Any = PydanticUndefined, **kwargs) -> Any:
        return Field(default, json_schema_extra={"role": role.value}, **kwargs)

    field.__doc__ = f"A pydantic Field whose role is {role.value!r}."
    return field


Recipe, RecipeIfSet, Seed, History, Runtime = (_keyed(r) for r in Role)


# how heads and deep-ensemble members are combined in every metric: their mean probabilities (the field's rule) or
# mean logits (the MixMo authors'); the one list of the allowed rules (harness.metrics.AVERAGES reads it)
EnsembleAverage = Literal["probabilities", "logits"]
# the rule of results recorded before the key existed (recipe version 1 averaged logits): what their metrics.json means
RECORDED_BEFORE_THE_RULE = "logits"


class TrialConfig(BaseModel):
    model_config = ConfigDict(**STRICT, validate_assignment=True)
    _trial_id: Optional[str] = PrivateAttr(None)  # the id, until a field changes

    # --- identity
    name: str = Runtime(
        "trial",
        pattern=NAME_PATTERN,
        max_length=NAME_LENGTH,
        description="results go to <output_dir>/<name>/<trial_id>/",
    )
    seed: int = Seed(
        0,
        ge=0,
        description=(
            "the seed of initialisation, data order and every random draw; deep ensembles' members differ in it"
        ),
    )
    output_dir: LaxPath = Runtime(Path("results"), description="the storage folder (a suite sets it from `storage`)")
    store: Optional[str] = Runtime(
        None, description="object-store URI the trial folder is mirrored to (output_dir is then node-local)"
    )

    # --- data
    dataset: str = Recipe("cifar100", description="a registered dataset (`harness list`)")
    data_dir: Optional[LaxPath] = Runtime(None, description="else $HARNESS_DATA_DIR, else ./data")
    data_fingerprint: Optional[str] = Runtime(
        None,
        description=(
            "set by `harness run` / `train`: the content hash of the data read (harness.data.fingerprint); a trial "
            "recorded with another one is never reused"
        ),
    )
    download: bool = Runtime(False, description="download the official CIFAR archive when nothing is found locally")
    train_subset: Optional[int] = Recipe(
        None, ge=1, description="a random class-balanced-in-expectation subset, for quick runs"
    )
    test_subset: Optional[int] = Recipe(None, ge=1, description="a fixed random subset of the test images")
    class_subset: Optional[int] = RecipeIfSet(
        None, ge=2, description="train and test on classes 0..N-1; the rest: near-OOD set"
    )
    val_size: int = Recipe(
        0, ge=0, description="held-out train images for temperature scaling; 0 = authors' test-swap protocol"
    )
    synthetic_size: int = Recipe(2000, ge=1, description="synthetic dataset only")
    synthetic_classes: int = Recipe(10, ge=2, description="synthetic dataset only")
    synthetic_resolution: int = Recipe(32, ge=8, description="synthetic dataset only")

    # --- network
    model: str = Recipe("wrn", description="a registered network (`harness list`): wrn, preact_resnet, or a plugin's")
    depth: int = Recipe(28, description="WRN: 6n + 4; PreActResNet: 18")
    width: int = Recipe(10, ge=1, le=1024, description="the width multiplier w (at most 1024)")

    # --- method (docs/recipe.md §1, §4)
    method: str = Recipe("vanilla", description="a registered method (`harness list`); its own keys beside it")
    M: Optional[int] = Recipe(None, ge=1, description="number of subnetworks; None = the method's default")
    b: int = Recipe(1, ge=1, description="batch repetition: each sampled image appears b times per batch")
    alpha: float = Recipe(2.0, ge=0, description="Dirichlet/Beta concentration of the MixMo ratios")
    r: float = Recipe(3.0, gt=0, description="loss-reweighting exponent 1/r; r = 1 weights heads by lam")
    p: float = Recipe(0.5, ge=0, le=1, description="Cut-MixMo: per-batch probability of the patch (cut) mixing")
    p_decay_start: float = Recipe(
        11 / 12, ge=0, le=1, description="p decays linearly to 0 over the last 1/12 of training"
    )
    p_clock: Literal["epoch", "step"] = Recipe(
        "epoch", description="the schedule's clock: epoch / epochs (authors') or per step"
    )
    msda: Literal["none", "mixup", "cutmix"] = Recipe(
        "none", description="sample augmentation applied to each input first"
    )
    msda_alpha: float = Recipe(1.0, gt=0, description="Beta(1, 1): uniform mixing ratio, as in the CutMix paper")
    msda_prob: float = Recipe(0.5, ge=0, le=1, description="per-sample probability of applying the MSDA")
    msda_partner: Literal["dataset", "batch"] = Recipe(
        "dataset", description="authors: the pasted partner is any training image"
    )
    options: dict[str, Any] = Recipe(
        default_factory=dict,
        description=(
            "the method's own keys (Method.options, e.g. packed_alpha), as set in the file: validated by "
            "trial.catalog against the method's declarations; written flat (`dropout: 0.2`), in the trial id when "
            "away from its default"
        ),
    )
    plugin_code: dict[str, str] = RecipeIfSet(
        default_factory=dict,
        description=(
            "the plugins whose method, model or dataset the trial uses: {'method regmixup': sha256}, set by "
            "harness.trial.catalog"
        ),
    )
    option_defaults: dict[str, Any] = Runtime(
        default_factory=dict,
        description=(
            "the method's keys left at their default, with it (set by trial.catalog, which keeps a key written at "
            "its default out of `options`: one computation, one trial id); recorded, not in the id"
        ),
    )
    plugins: list[str] = Runtime(default_factory=list, description="where they were loaded from (files, modules)")
    revisions: dict[str, int] = RecipeIfSet(
        default_factory=dict,
        description=(
            "the revisions of the method, model and dataset the trial uses, where not 0 (a default or the computation "
            "changed since results existed: {'method packed_ensemble': 1}), set by harness.trial.catalog"
        ),
    )

    # --- optimisation (docs/recipe.md §5)
    epochs: int = Recipe(300, ge=1, description="the training budget")
    batch_size: int = Recipe(64, ge=1, description="counts repeated entries: 64 with b = 4 is 16 distinct images")
    lr: Optional[float] = Recipe(None, gt=0, description="None = base_lr / b")
    base_lr: float = Recipe(0.05, gt=0, description="0.1 / (2 b): the authors scale lr down with repetition")
    momentum: float = Recipe(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Recipe(True, description="Nesterov momentum (the authors')")
    l2: float = Recipe(3e-4, ge=0, description="L2 term l2 * sum(w^2) on all parameters, added to the loss")
    weight_decay: float = Recipe(0.0, ge=0, description="SGD weight decay beside the L2 term (Tiny ImageNet: 1e-4)")
    warmup_epochs: float = Recipe(1.0, ge=0, description="linear per-step warmup")
    milestones: list[int] = Recipe(
        default_factory=lambda: [101, 201, 226], description="1-indexed epochs of a reference budget"
    )
    milestones_budget: int = Recipe(300, ge=1, description="milestones are scaled by epochs / milestones_budget")
    lr_gamma: float = Recipe(0.1, gt=0, le=1, description="the lr factor at each milestone")
    drop_last: bool = Recipe(True, description="the authors' loader drops an epoch's last partial batch")
    crop_padding: int = Recipe(4, ge=0, description="random crop with this zero padding")
    flip: bool = Recipe(True, description="random horizontal flip")

    # --- execution
    device: str = Runtime("auto", pattern=DEVICE_PATTERN, description="auto | cpu | cuda | cuda:N")
    precision: Literal["fp32", "bf16"] = Recipe(
        "fp32", description="bf16: autocast; about 2x the fp32 step on an H100/H200"
    )
    loader: Literal["device", "ffcv"] = Runtime(
        "device", description="device: the uint8 dataset lives on the training device"
    )
    loader_workers: int = Runtime(8, ge=1, description="ffcv only: decoding threads")
    ffcv_dir: Optional[LaxPath] = Runtime(
        None, description="ffcv only: where `harness data prepare` wrote the .beton files"
    )
    channels_last: Optional[bool] = Runtime(
        None, description="None: on for CUDA (NHWC feeds the tensor cores), off on the CPU"
    )
    compile: Union[bool, Literal["default", "reduce-overhead", "max-autotune"]] = Runtime(
        False, description="torch.compile the model"
    )

    # --- engine and data parallelism
    engine: str = RecipeIfSet(
        "torch", description="a registered engine (harness.engines): torch (DDP, compile, bf16) or deepspeed"
    )
    zero_stage: int = RecipeIfSet(
        0, ge=0, le=2, description="deepspeed only: 1 partitions optimizer state, 2 also gradients"
    )
    grad_accum_steps: int = RecipeIfSet(
        1, ge=1, description="micro-batches per optimizer step; batch_size stays the global batch"
    )
    deepspeed: dict[str, Any] = RecipeIfSet(
        default_factory=dict, description="raw DeepSpeed settings, merged over the generated ones"
    )
    workers_per_trial: int = Runtime(
        1, ge=1, description="data-parallel workers (Ray Train); the global batch is split between them"
    )
    eval_batch_size: int = Runtime(500, ge=1, description="test-time batch")
    eval_every: int = History(1, ge=0, description="test top-1/NLL in the history every N epochs (0: only at the end)")
    ensemble_average: EnsembleAverage = Runtime(
        "probabilities",
        description=(
            "how the M heads are combined in every metric: the members' mean probabilities (the field's rule), or "
            "their mean logits (the MixMo authors'). A reading of the same saved logits, not a recipe key (a suite "
            "sets it)"
        ),
    )
    progress: bool = Runtime(True, description="a progress bar in the terminal")

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, raw: Any) -> Any:
        """Keys that are no field are the method's own (``dropout: 0.2``): kept in ``options`` for the catalog."""
        if not isinstance(raw, dict):
            return raw
        extra = {k: v for k, v in raw.items() if k not in cls.model_fields}
        if not extra:
            return raw
        options = raw.get("options") or {}
        if not isinstance(options, dict):
            return raw
        return {**{k: v for k, v in raw.items() if k not in extra}, "options": {**options, **extra}}

    @model_validator(mode="after")
    def _consistent(self) -> "TrialConfig":
        """The checks within the schema; those that need the registries (method x model x dataset, M, the
        method's keys) are harness.trial.catalog's."""
        if any(not 1 <= m <= self.milestones_budget for m in self.milestones) or self.milestones != sorted(
            set(self.milestones)
        ):
            raise ValueError(
                f"milestones {self.milestones}: increasing epochs between 1 and milestones_budget "
                f"= {self.milestones_budget}"
            )
        if self.batch_size % self.b:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of b = {self.b}")
        shards = self.workers_per_trial * self.grad_accum_steps
        if self.batch_size % shards:
            raise ValueError(
                f"batch_size {self.batch_size} does not split into workers_per_trial x grad_accum_steps = "
                f"{shards} equal micro-batches"
            )
        if self.engine != "deepspeed" and (self.zero_stage or self.deepspeed):
            raise ValueError("zero_stage and deepspeed settings need engine: deepspeed")
        if self.engine == "deepspeed" and (self.compile or self.channels_last):
            raise ValueError(
                "compile and channels_last are for engine: torch (DeepSpeed runs eagerly and "
                "broadcasts dense parameters)"
            )
        return self

    # --- derived values
    @property
    def num_inputs(self) -> int:
        """M, which harness.trial.catalog resolves to the method's default when the file leaves it out."""
        if self.M is None:
            raise RuntimeError("M is unresolved: build trial configs with harness.trial.catalog.build_config")
        return self.M

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else self.base_lr / self.b

    @classmethod
    def role(cls, key: str) -> Role:
        """A field's role (KeyError for a name that is no field)."""
        return _roles(cls)[key]

    def recipe(self) -> dict[str, Any]:
        """The keys that determine the result, in a canonical JSON-able form: the trial id's input."""
        runtime, if_set = _recipe_rules(type(self))
        d = self.model_dump(mode="json", exclude=runtime)
        d.update(d.pop("options"))  # flat, as the method's keys were fields of their own
        for key, default in if_set.items():
            if key in d and d[key] == default:
                del d[key]
        d["M"] = self.num_inputs
        d["recipe_version"] = RECIPE_VERSION
        return d

    # The id is asked for many times per trial (plans of 10,000 trials): kept until a field changes.
    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if not name.startswith("_"):
            self._trial_id = None

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> "TrialConfig":
        copy = super().model_copy(update=update, deep=deep)
        copy._trial_id = None
        return copy

    def record(self) -> dict[str, Any]:
        """The config as a trial folder records it (config.yaml): every key, with the id and the values derived
        from the recipe (M, the resolved lr)."""
        dump = self.model_dump(mode="json")
        return {
            **{k: v for k, v in dump.items() if k != "options"},
            **dump["options"],
            "trial_id": self.trial_id,
            "M": self.num_inputs,
            "lr": self.learning_rate,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "TrialConfig":
        """The config a record (config.yaml) was written from: record()'s inverse. The record keeps the resolved
        lr, not whether it was set: the reading whose trial id is the recorded one is taken (an explicit lr equal
        to base_lr / b has another id), else, for a record of another recipe version, lr counts as set when it
        differs from base_lr / b. ValueError (pydantic's) for a record that does not validate."""
        keys = {k: v for k, v in record.items() if k not in ("trial_id", "lr")}  # record() adds the id, resolves lr
        unset = cls.model_validate({**keys, "lr": None})
        if record.get("lr") is None or unset.trial_id == record.get("trial_id"):
            return unset
        explicit = cls.model_validate({**keys, "lr": record["lr"]})
        if explicit.trial_id == record.get("trial_id") or record["lr"] != unset.learning_rate:
            return explicit
        return unset

    @property
    def trial_id(self) -> str:
        if self._trial_id is None:
            digest = hashlib.sha1(json.dumps(self.recipe(), sort_keys=True).encode()).hexdigest()[:8]
            self._trial_id = (
                f"{self.method}-{self.model}{self.depth}x{self.width}-M{self.num_inputs}-s{self.seed}-{digest}"
            )
        return self._trial_id

    @property
    def trial_dir(self) -> Path:
        return Path(self.output_dir) / self.name / self.trial_id


@functools.cache
def _roles(cls) -> dict[str, Role]:
    return {k: Role(f.json_schema_extra["role"]) for k, f in cls.model_fields.items()}


@functools.cache
def _recipe_rules(cls) -> tuple[frozenset, dict[str, Any]]:
    """(the runtime keys, left out of the id; the keys in the id only away from their default, with it)."""
    roles = _roles(cls)
    runtime = frozenset(k for k, r in roles.items() if r == Role.RUNTIME)
    if_set = {
        k: cls.model_fields[k].get_default(call_default_factory=True)
        for k, r in roles.items()
        if r == Role.RECIPE_IF_SET
    }
    return runtime, if_set


def is_setting_key(key: str) -> bool:
    """Whether trials that differ in this recorded config key (config.json: the fields, and trial_id) are
    different settings: recipe keys are; the seed (and the trial id hashed from it), runtime keys and the
    history's eval_every are not. A key TrialConfig no longer has counts, to be safe."""
    if key == "trial_id":
        return False
    return key not in TrialConfig.model_fields or TrialConfig.role(key) in (Role.RECIPE, Role.RECIPE_IF_SET)


def setting(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a recorded config that one report row, or the members of one deep ensemble, share."""
    return {k: v for k, v in config.items() if is_setting_key(k)}


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            from harness.core.registry import did_you_mean

            allowed = ", ".join(sorted(TrialConfig.model_fields))
            msg = f"unknown key{did_you_mean(e['loc'][-1], TrialConfig.model_fields)}; allowed keys: {allowed}"
        elif e["type"] == "string_pattern_mismatch" and e["ctx"]["pattern"] in PATTERN_HELP:
            msg = f"{e['input']!r} is not {PATTERN_HELP[e['ctx']['pattern']]}"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)
