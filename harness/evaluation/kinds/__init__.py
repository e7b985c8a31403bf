"""Kinds of evaluation set (``EvalSet.kind``): each knows how to evaluate a trial on a set of its kind (load the
images, predict, score), rescore a deep ensemble from its members' saved logits, say its result in one line and
name its metrics (MLflow: eval.<set id>.<name>). It also owns its sets' names: it parses them, lists them, checks
a set can be read before anything trains. A new kind is one file in this package, its instance registered in KINDS;
``parse_eval_set`` asks every kind."""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch

from harness.core import schema
from harness.core.config import TrialConfig
from harness.core.registry import Registry
from harness.data.eval_sets import EvalSet, TrialData
from harness.store.errors import CorruptFile
from harness.store.trial_folder import TrialFolder


class Predictor(Protocol):
    def predict(self, arrays) -> torch.Tensor:
        """Head logits (N, M, K), float32 on the CPU."""


def saved_part(
    folder: TrialFolder, set_id: str, name: str, predict: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """A part's saved logits, predicted and saved first if they are not there (or unreadable)."""
    try:
        saved = folder.eval_part(set_id, name)
    except CorruptFile:
        saved = None
    if saved is None:
        saved = predict()
        folder.save_eval_part(set_id, name, saved)
    return saved


def head_logits(saved: dict[str, np.ndarray], key: str = schema.PART_LOGITS) -> torch.Tensor:
    return torch.from_numpy(saved[key]).float()


def pooled(folders: list[TrialFolder], set_id: str, part: str) -> torch.Tensor:
    """The members' saved head logits of one part, side by side: the deep ensemble's heads."""
    return torch.from_numpy(np.concatenate([f.eval_part(set_id, part)[schema.PART_LOGITS] for f in folders], 1)).float()


class EvalKind:
    """The interface of a kind (the base class evaluates nothing)."""

    fields: dict[str, type] = {}  # what its records hold beside set, id and kind (checked when a record is read)
    order = 0  # where its names come in `harness list` and in an unknown name's message

    def parse(self, text: str, name: str, path: str | None) -> EvalSet | None:
        """The set ``text`` names (``name``, and ``path`` when written NAME=PATH) if it is one of this kind's, else
        None; ValueError for one of its names written wrongly."""
        return None

    def names(self) -> list[str]:
        """Its sets' names, as `harness list` and an unknown name's message show them."""
        return []

    def expand(self, spec: EvalSet, dataset: str) -> list[EvalSet]:
        """The sets ``spec`` stands for on a trial trained on ``dataset`` (a protocol's group: its members)."""
        return [spec]

    def check(self, spec: EvalSet, trial: TrialData) -> None:
        """DataError now when the set cannot be read for this trial (reads nothing large): before anything trains."""

    def evaluate(
        self, folder: TrialFolder, cfg: TrialConfig, spec: EvalSet, network: Predictor
    ) -> dict:  # pragma: no cover - interface
        """The set's record for one trial (its parts' logits saved under eval/<set id>/ on the way)."""
        raise NotImplementedError

    def fingerprint(self, spec: EvalSet, cfg: TrialConfig) -> str | None:
        """The content hash of the images the set would be read from now: a record of other images is never
        reused (harness.data.fingerprint)."""
        raise NotImplementedError

    def rescore(
        self,
        record: dict,
        folders: list[TrialFolder],
        clean_heads: torch.Tensor,
        temperature: float,
        average: str = "probabilities",
    ) -> dict | None:
        """The record of a deep ensemble of ``folders`` (members that all have it: ``record`` is the first's),
        recomputed on their pooled heads with the members combined by ``average``; None when the kind has no
        ensemble record."""
        return None

    def headline(self, record: dict) -> str:
        """One line of a record, for the terminal."""
        raise NotImplementedError

    def metrics(self, record: dict) -> dict[str, float]:
        """The record's numbers by flat name (the MLflow metrics eval.<set id>.<name>)."""
        raise NotImplementedError


KINDS: Registry[EvalKind] = Registry("evaluation-set kind", "harness.evaluation.kinds")  # one file per kind here


def record_problem(record) -> str | None:
    """What makes ``record`` (read from an eval/<set>/metrics.json) unusable, or None."""
    if not isinstance(record, dict) or record.get("kind") not in KINDS.names():
        return f"not an evaluation record (kind must be one of {', '.join(KINDS.names())})"
    wanted = {"set": str, "id": str, **KINDS.get(record["kind"]).fields}
    wrong = [k for k, t in wanted.items() if not isinstance(record.get(k), t)]
    return f"a {record['kind']} record without {', '.join(wrong)}" if wrong else None


def kind_of(record_or_spec) -> EvalKind:
    kind = record_or_spec["kind"] if isinstance(record_or_spec, dict) else record_or_spec.kind
    return KINDS.get(kind)


def _kinds() -> list[EvalKind]:
    return sorted((kind for _, kind in KINDS.items()), key=lambda kind: kind.order)


def allowed_names() -> str:
    return ", ".join(name for kind in _kinds() for name in kind.names())


def parse_eval_set(text: str) -> EvalSet:
    """``test``, ``cifar100-c``, ``cifar100-c=PATH``, ``ood:svhn``, ``ood:folder=PATH``, a plugin kind's name:
    the set, parsed by the kind it belongs to; ValueError otherwise."""
    name, _, path = str(text).strip().partition("=")
    for kind in _kinds():
        spec = kind.parse(text, name, path or None)
        if spec is not None:
            return spec
    raise ValueError(f"{text!r}: unknown evaluation set; allowed: {allowed_names()}")


def expand_protocol(sets: list[EvalSet], dataset: str) -> list[EvalSet]:
    """Each set replaced by those it stands for on ``dataset`` (``ood:near``: OpenOOD's near sets), no duplicates;
    ValueError for a group the dataset has no protocol for."""
    out: list[EvalSet] = []
    for spec in sets:
        out += [m for m in kind_of(spec).expand(spec, dataset) if m.id not in {o.id for o in out}]
    return out


def check_eval_set(spec: EvalSet, trial: TrialData) -> None:
    """DataError now if the set cannot be read for this trial (reads nothing large)."""
    kind_of(spec).check(spec, trial)
