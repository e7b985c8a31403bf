"""harness.data.readers: image trees read regular files only (FIFOs, devices and folder links skipped by name),
within their caps."""

import logging
from pathlib import Path

import pytest

from helpers import png_header, tree_with_traps


def test_image_trees_skip_fifos_devices_and_folder_links_by_name(tmp_path):
    from harness.data.errors import DataError
    from harness.data.readers import images_under, load_image, logger, read_image_tree

    tree = tree_with_traps(tmp_path)
    said = logging.Handler()
    said.emit = lambda record: lines.append(record.getMessage())
    lines = []
    logger.addHandler(said)
    try:
        arrays = read_image_tree(tree, 16)
    finally:
        logger.removeHandler(said)
    assert arrays.x.shape == (1, 16, 16, 3) and arrays.y.tolist() == [-1]
    assert sorted(lines) == [
        f"skipped, not an image file: {tree / 'x.png'} (a FIFO)",
        f"skipped, not an image file: {tree / 'zero.jpg'} (a character device)",
    ]
    with pytest.raises(DataError, match=r"x\.png: not a regular file \(a FIFO\); only image files are read"):
        load_image(tree / "x.png")
    with pytest.raises(DataError, match="/: the root of the filesystem; point at the folder that holds the images"):
        images_under(Path("/"))
    (tree / "huge.png").write_bytes(png_header(12_000, 12_000))
    with pytest.raises(DataError, match=r"huge\.png: 12000x12000 pixels, more than the 25,000,000 an image may have"):
        read_image_tree(tree, 16)


def test_an_image_tree_larger_than_the_caps_is_refused_while_walking(tmp_path, monkeypatch):
    from harness.data import readers as datasets

    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(png_header(4, 4))
    monkeypatch.setattr(datasets, "MAX_TREE_IMAGES", 3)
    with pytest.raises(datasets.DataError, match=f"{tmp_path}: more than 3 images under it, the most one folder"):
        datasets.images_under(tmp_path)
