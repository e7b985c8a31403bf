"""Zip files (logits, checkpoints) checked: cheaply by their directory, or whole against their CRCs, once per
file as it stands (the Verified record of a suite)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from harness.core import bounded_read
from harness.core.schema import (
    SUITE_CACHE,
    VERIFIED,
)
from harness.store.errors import CorruptFile
from harness.store.files import write_json


class Verified:
    """Zip files already read whole against their CRCs, by identity (path, size, modification time, inode, ctime): each
    rerun of a suite reads a file once, not every time (10,000 CIFAR-100 trials hold 40 GB of logits)."""

    def __init__(self, suite_dir: Path):
        self.path = Path(suite_dir) / SUITE_CACHE / VERIFIED
        try:
            self.files = {tuple(i) for i in json.loads(self.path.read_text())}
        except (OSError, ValueError, TypeError):
            self.files = set()

    @staticmethod
    def identity(path: Path) -> tuple:
        info = os.stat(path)
        return (os.path.abspath(path), info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns)

    def save(self) -> None:
        try:
            write_json(self.path, sorted(self.files))
        except OSError:  # a read-only folder: every file is read again next time, nothing worse
            pass


def check_zip(
    path: Path, members: tuple[str, ...] = (), thorough: bool = False, verified: Verified | None = None
) -> None:
    """Integrity check: cheap by default (the zip directory sits at the end: a truncated file fails here, and so
    does a member whose recorded size the file cannot hold); thorough also reads every member against its CRC,
    unless ``verified`` holds the file as it is."""
    if thorough and verified is not None:
        try:
            identity = Verified.identity(path)
        except OSError:
            identity = None
        if identity in verified.files:
            thorough = False
    try:
        bounded_read.require_regular(path)
    except OSError as err:
        raise CorruptFile(path, err.strerror or str(err)) from None
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = {i.filename.rsplit("/", 1)[-1] for i in infos}
            end, size = max((i.header_offset + i.compress_size for i in infos), default=0), path.stat().st_size
            if end > size:
                raise CorruptFile(path, f"truncated (its members need {end} bytes, the file has {size})")
            damaged = z.testzip() if thorough else None
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as err:
        raise CorruptFile(path, f"truncated or not a zip archive ({err})") from None
    if damaged is not None:
        raise CorruptFile(path, f"damaged: {damaged} fails its CRC check")
    lacking = [m for m in members if m not in names]
    if lacking:
        raise CorruptFile(path, f"lacks {', '.join(lacking)}")
    if thorough and verified is not None and identity is not None:
        verified.files.add(identity)
