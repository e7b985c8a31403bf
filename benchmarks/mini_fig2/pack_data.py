"""Carry CIFAR-100 to a machine that cannot download it, within the device tool's 64 MiB.

`pack` (here) keeps the training images that `train_subset: N` selects (the first N of the fixed
SPLIT_SEED permutation, as harness.data.load_dataset draws them) and the whole test set, as
lossless WebP mosaics (0.56 of the raw bytes). `unpack` (there) rebuilds train.npz with all 50,000
labels and the kept images at their original rows (the others zero, never read by a trial with the
same `train_subset`), so trial ids and data match a run on the full files. Pixels are checked by sha256.

    python benchmarks/mini_fig2/pack_data.py pack ../shared/data/cifar100 .mini_fig2_data --train-subset 20000
    python benchmarks/mini_fig2/pack_data.py unpack .mini_fig2_data /tmp/data/cifar100
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

TILE = 1000  # images per WebP file: 10 rows of 100


def _sha(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def _encode(x: np.ndarray, out: Path, stem: str) -> int:
    files = 0
    for start in range(0, len(x), TILE):
        chunk = x[start : start + TILE]
        rows = -(-len(chunk) // 100)
        pad = np.zeros((rows * 100 - len(chunk), *chunk.shape[1:]), np.uint8)
        mosaic = np.concatenate([chunk, pad]).reshape(rows, 100, 32, 32, 3).transpose(0, 2, 1, 3, 4)
        Image.fromarray(mosaic.reshape(rows * 32, 100 * 32, 3)).save(
            out / f"{stem}_{files:03d}.webp", "WEBP", lossless=True, quality=100, method=6
        )
        files += 1
    return files


def _decode(folder: Path, stem: str, count: int) -> np.ndarray:
    parts = []
    for path in sorted(folder.glob(f"{stem}_*.webp")):
        m = np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"))
        rows = m.shape[0] // 32
        parts.append(m.reshape(rows, 32, 100, 32, 3).transpose(0, 2, 1, 3, 4).reshape(rows * 100, 32, 32, 3))
    return np.concatenate(parts)[:count]


def pack(src: Path, out: Path, train_subset: int) -> None:
    from harness.data import SPLIT_SEED

    out.mkdir(parents=True, exist_ok=True)
    with np.load(src / "train.npz") as z:
        x_train, y_train = z["x"], z["y"]
    with np.load(src / "test.npz") as z:
        x_test, y_test = z["x"], z["y"]
    keep = np.sort(np.random.default_rng(SPLIT_SEED).permutation(len(y_train))[:train_subset])
    meta = {
        "train_rows": len(y_train),
        "train_keep": len(keep),
        "test_rows": len(y_test),
        "train_sha256": _sha(x_train[keep]),
        "test_sha256": _sha(x_test),
    }
    np.savez_compressed(out / "labels.npz", keep=keep, y_train=y_train, y_test=y_test)
    _encode(x_train[keep], out, "train")
    _encode(x_test, out, "test")
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    if (src / "classes.txt").exists():
        (out / "classes.txt").write_text((src / "classes.txt").read_text())
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"packed {len(keep)} train + {len(y_test)} test images into {out}: {size / 2**20:.1f} MiB")


def unpack(src: Path, out: Path) -> None:
    meta = json.loads((src / "meta.json").read_text())
    labels = np.load(src / "labels.npz")
    kept, x_test = _decode(src, "train", meta["train_keep"]), _decode(src, "test", meta["test_rows"])
    if _sha(kept) != meta["train_sha256"] or _sha(x_test) != meta["test_sha256"]:
        raise SystemExit(f"{src}: decoded pixels do not match the packed checksums")
    x_train = np.zeros((meta["train_rows"], 32, 32, 3), np.uint8)
    x_train[labels["keep"]] = kept
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "train.npz", x=x_train, y=labels["y_train"])
    np.savez(out / "test.npz", x=x_test, y=labels["y_test"])
    if (src / "classes.txt").exists():
        (out / "classes.txt").write_text((src / "classes.txt").read_text())
    print(
        f"unpacked {len(kept)} train (of {len(x_train)} rows) + {len(x_test)} test images into {out}; checksums match"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("src", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--train-subset", type=int, required=True)
    b = sub.add_parser("unpack")
    b.add_argument("src", type=Path)
    b.add_argument("out", type=Path)
    args = p.parse_args()
    pack(args.src, args.out, args.train_subset) if args.cmd == "pack" else unpack(args.src, args.out)
