"""Evaluation sets beyond the clean test set, read in the layouts they are downloaded in.

Names (``harness evaluate --on NAME``, a suite's ``eval_sets:``):

    test                     the trial's own test set, re-evaluated from its checkpoint
    cifar10-c, cifar100-c    CIFAR-10-C / CIFAR-100-C: <corruption>.npy (5 x N images, severities 1-5 in
                             that order) and labels.npy, as in the official archives
    tinyimagenet-c           Tiny-ImageNet-C: <corruption>/<severity>/<wnid>/*.JPEG
    cifar10-c-generated,     the CIFAR-C layout written by `harness data corrupt`: a stand-in, never
    cifar100-c-generated     comparable with published CIFAR-C numbers
    ood:<dataset>            the test split of a registered dataset as out-of-distribution (cifar10,
                             cifar100, svhn, tinyimagenet, synthetic)
    ood:heldout-classes      the test images of the classes a `class_subset` trial did not train on
    ood:textures             DTD's dtd/images/<class>/*.jpg (any size: resized, centre-cropped)
    ood:folder=PATH          every image under PATH (resized, centre-cropped)

A corruption set may name its folder: ``cifar100-c=/data/CIFAR-100-C``. OOD images are always scored
against the trial's in-distribution test set (harness.metrics.uncertainty). The names are parsed by their kinds
(harness.evaluation.kinds); this module reads the sets' images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core import bounded_read
from harness.data.datasets import DATASETS, ImageArrays, default_data_dir
from harness.data.errors import DataError
from harness.data.readers import images_under, load_image, read_image_tree
from harness.data.sources.tinyimagenet import tinyimagenet_classes

# The benchmark's 15 corruptions (Hendrycks & Dietterich, 2019): the mean corrupted accuracy, NLL and ECE
# of the reference tables average these x 5 severities. The official archives hold 4 extra ones
# (speckle_noise, gaussian_blur, spatter, saturate): evaluated and reported, kept out of the mean.
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES = 5
GENERATED_MARKER = "GENERATED.json"  # written by `harness data corrupt` beside a generated set

# name -> (the trained dataset it belongs to, folder names looked for under the data folder, layout): from the
# dataset specs (harness.data.datasets)
CORRUPTION_SETS = {
    name: (dataset, c.folders, c.layout)
    for dataset in DATASETS.names()
    for name, c in DATASETS.get(dataset).corruptions.items()
}
OOD_SOURCES = ("heldout-classes", "textures", "folder")  # besides every registered dataset
# OpenOOD v1.5's protocol for the CIFARs: `ood:near` and `ood:far` stand for these sets, per trained dataset
OPENOOD = {
    "cifar10": {"near": ("cifar100", "tinyimagenet"), "far": ("mnist", "svhn", "textures", "places365")},
    "cifar100": {"near": ("cifar10", "tinyimagenet"), "far": ("mnist", "svhn", "textures", "places365")},
}
OPENOOD_GROUPS = ("near", "far")


@dataclass(frozen=True)
class EvalSet:
    """A parsed evaluation-set name (harness.evaluation.kinds parses it: each kind its own names)."""

    name: str  # as written
    kind: str  # the kind that parsed it: test | corruption | ood | a plugin's
    source: str  # the corruption set's or OOD source's name
    id: str  # the folder of its results in a trial: eval/<id>/
    path: str | None = None  # a folder given with NAME=PATH


def openood_group(source: str, dataset: str) -> str | None:
    """'near' or 'far' when ``source`` is one of OpenOOD's sets for a trial trained on ``dataset``."""
    groups = OPENOOD.get(dataset, {})
    return next((g for g, members in groups.items() if source in members), None)


def with_absolute_path(name: str, relative_to: Path | None = None) -> str:
    """``NAME=PATH`` with PATH made absolute (trials and Ray tasks run in other working directories): a relative
    PATH against ``relative_to`` (a suite file's folder), else the working folder."""
    base, _, path = name.partition("=")
    if not path:
        return name
    try:
        return f"{base}={(Path(relative_to or '.') / path).resolve()}"
    except (RuntimeError, OSError) as err:  # a symlink loop (RuntimeError before Python 3.13), a bad path
        raise ValueError(f"{name!r}: {path} cannot be resolved ({err})") from None


@dataclass(frozen=True)
class TrialData:
    """What evaluation needs to know of the data a trial was trained on."""

    dataset: str
    data_dir: Path | None
    num_classes: int  # of the trained network (class_subset applied)
    resolution: int
    class_subset: int | None = None

    @classmethod
    def of(cls, cfg) -> "TrialData":
        """A trial config's data: its dataset spec's classes and resolution, class_subset applied."""
        classes, side = DATASETS.get(cfg.dataset).shape(cfg.synthetic_classes, cfg.synthetic_resolution)
        return cls(cfg.dataset, cfg.data_dir, cfg.class_subset or classes, side, cfg.class_subset)


# --- corruptions
def corruption_folder(spec: EvalSet, trial: TrialData) -> Path:
    """The set's folder, checked against the trial's dataset; DataError (where it looked, how to get it)."""
    dataset, folders, _ = CORRUPTION_SETS[spec.source]
    if trial.dataset != dataset:
        raise DataError(f"{spec.name}: corrupts {dataset} images, but the trial was trained on {trial.dataset}")
    root = default_data_dir(trial.data_dir)
    candidates = [Path(spec.path)] if spec.path else [root / f for f in folders]
    for folder in candidates:
        if folder.is_dir() and corruption_names(folder, spec):
            return folder
    how = (
        f"generate it with `harness data corrupt {dataset}{f' --out {spec.path}' if spec.path else ''}` (a stand-in, "
        f"not the official set)"
        if spec.source.endswith("-generated")
        else "download the official archive (Hendrycks & Dietterich, 2019, on Zenodo) and unpack it there, "
        f"or give its folder as {spec.source}=PATH"
    )
    raise DataError(
        f"{spec.name}: no corruption files found. Looked in:\n  " + "\n  ".join(map(str, candidates)) + f"\n{how}"
    )


def corruption_names(folder: Path, spec: EvalSet) -> list[str]:
    """The corruptions present: the benchmark's 15 first (in their order), then any extra ones, sorted."""
    if CORRUPTION_SETS[spec.source][2] == "npy":
        present = {p.stem for p in folder.glob("*.npy") if p.name != "labels.npy"}
    else:
        present = {p.name for p in folder.iterdir() if p.is_dir()}
    return [c for c in CORRUPTIONS if c in present] + sorted(present - set(CORRUPTIONS))


def generation_record(folder: Path) -> dict | None:
    """The record `harness data corrupt` left (parameters, source), or None for a downloaded set."""
    marker = folder / GENERATED_MARKER
    if not marker.exists():
        return None
    try:
        return json.loads(marker.read_text())
    except ValueError as err:
        raise DataError(f"{marker}: not valid JSON ({err})") from None


def read_corruption(folder: Path, name: str, spec: EvalSet, trial: TrialData) -> tuple[ImageArrays, np.ndarray]:
    """One corruption's images at all severities, labels and severity (1-5) per image; only the images of
    classes the trial was trained on (a class_subset trial sees its classes)."""
    if CORRUPTION_SETS[spec.source][2] == "npy":
        arrays, severity = _read_npy_corruption(folder, name)
    else:
        arrays, severity = _read_folder_corruption(folder / name, trial)
    if arrays.x.shape[1:3] != (trial.resolution, trial.resolution):
        raise DataError(
            f"{folder / name}: images are {arrays.x.shape[1]}x{arrays.x.shape[2]}, the trial's "
            f"{trial.resolution}x{trial.resolution}"
        )
    keep = np.flatnonzero(arrays.y < trial.num_classes)
    return arrays.take(keep), severity[keep]


def _read_npy_corruption(folder: Path, name: str) -> tuple[ImageArrays, np.ndarray]:
    path, labels_path = folder / f"{name}.npy", folder / "labels.npy"
    try:
        for file in (path, labels_path):  # a FIFO would block np.load
            bounded_read.require_regular(file)
        x = np.load(path, mmap_mode="r", allow_pickle=False)
        y = np.load(labels_path, allow_pickle=False).astype(np.int64)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or len(x) != len(y) or len(x) % SEVERITIES:
        raise DataError(
            f"{path}: expected uint8 (5 x N, H, W, 3) images and as many labels in {labels_path.name}, got "
            f"{x.dtype} {x.shape} and {y.shape}"
        )
    n = len(x) // SEVERITIES
    blocks = y.reshape(SEVERITIES, n)
    if not (blocks == blocks[0]).all():
        raise DataError(
            f"{labels_path}: the {SEVERITIES} blocks of {n} labels differ; the official layout repeats the test "
            f"labels once per severity (1 to 5, in order)"
        )
    return ImageArrays(np.asarray(x), y), np.repeat(np.arange(1, SEVERITIES + 1), n)


def _read_folder_corruption(folder: Path, trial: TrialData) -> tuple[ImageArrays, np.ndarray]:
    label = {w: i for i, w in enumerate(tinyimagenet_classes(trial.data_dir))}
    xs, ys, severities = [], [], []
    for severity in range(1, SEVERITIES + 1):
        level = folder / str(severity)
        if not level.is_dir():
            raise DataError(f"{level}: missing; Tiny-ImageNet-C holds severities 1 to 5 per corruption")
        for wnid_dir in sorted(p for p in level.iterdir() if p.is_dir()):
            if wnid_dir.name not in label:
                raise DataError(f"{wnid_dir}: {wnid_dir.name!r} is not a class of the trial's wnids.txt")
            files = images_under(wnid_dir, recursive=False)
            xs += [load_image(p, trial.resolution) for p in files]
            ys += [label[wnid_dir.name]] * len(files)
            severities += [severity] * len(files)
    if not xs:
        raise DataError(f"{folder}: no images")
    return ImageArrays(np.stack(xs), np.asarray(ys, np.int64)), np.asarray(severities)


# --- out-of-distribution sets
def read_ood(spec: EvalSet, trial: TrialData) -> tuple[ImageArrays, str]:
    """The OOD images at the trial's resolution, and where they came from."""
    if spec.source == "heldout-classes":
        from harness.data import held_out_classes

        if trial.class_subset is None:
            raise DataError(
                f"{spec.name}: the trial trained on every class of {trial.dataset}; set `class_subset: N` to "
                f"hold classes N and above out as a near-OOD set"
            )
        data = DATASETS.get(trial.dataset)(data_dir=trial.data_dir)
        return held_out_classes(data, trial.class_subset), f"{trial.dataset} test images of classes >= " + str(
            trial.class_subset
        )
    if spec.source in ("textures", "folder"):
        folder = ood_folder(spec, trial)
        return read_image_tree(folder, trial.resolution), f"images under {folder}"
    if spec.source == trial.dataset:
        raise DataError(
            f"{spec.name}: the trial's own dataset cannot be its OOD set; for a near-OOD split, train with "
            f"`class_subset: N` and evaluate on ood:heldout-classes"
        )
    data = DATASETS.get(spec.source)(data_dir=trial.data_dir, test_only=True)  # a reader may skip its train split
    x = data.test.x
    if x.shape[1] != trial.resolution:
        x = resize_images(x, trial.resolution)
    return ImageArrays(x, np.full(len(x), -1, np.int64)), f"{data.source} (test split)"


def ood_folder(spec: EvalSet, trial: TrialData) -> Path:
    """The image folder of ood:textures (DTD under the data folder) or ood:folder=PATH; DataError if missing."""
    folder = Path(spec.path) if spec.path else default_data_dir(trial.data_dir) / "dtd" / "images"
    if not folder.is_dir():
        raise DataError(
            f"{spec.name}: {folder} not found"
            + ("; download DTD (dtd-r1.0.1.tar.gz) and unpack it in the data folder" if not spec.path else "")
        )
    return folder


def resize_images(x: np.ndarray, side: int) -> np.ndarray:
    """uint8 NHWC images resized to side x side (bilinear, antialiased), in chunks."""
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, len(x), 1024):
        chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + 1024])).permute(0, 3, 1, 2).float()
        resized = F.interpolate(chunk, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        out.append(resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)
