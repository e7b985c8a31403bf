"""Downloads against servers on localhost: a stall fails on time, a short or wrong file is refused, and nothing
partial is left; the official archive's layout is unpacked and read."""

import hashlib
import io
import pickle
import socket
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from harness.data import DATASETS, DataError
from harness.data.download import fetch
from harness.data.sources import cifar as datasets_module


def serve(body: bytes, claimed: int | None = None):
    """An HTTP server on localhost answering every GET with ``body`` (Content-Length ``claimed``, default its
    length); -> (url, server)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(claimed or len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/archive.tar.gz", server


def test_a_server_that_never_answers_fails_after_the_timeout(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection (the kernel does), never says a word
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/cifar.tar.gz"
    start = time.monotonic()
    with pytest.raises(DataError, match=r"no answer for 1 s, the server stalled; the partial file is removed"):
        fetch(url, tmp_path / "cifar.tar.gz", timeout=1)
    assert time.monotonic() - start < 10
    assert list(tmp_path.iterdir()) == []
    listener.close()


def test_a_short_or_wrong_file_is_refused_and_removed(tmp_path):
    url, server = serve(b"x" * 1000, claimed=5000)  # closes after 1000 of 5000 bytes
    with pytest.raises(DataError, match=r"closed after 1,000 of 5,000 bytes"):
        fetch(url, tmp_path / "a.tar.gz", timeout=5)
    server.shutdown()
    url, server = serve(b"y" * 1000)
    with pytest.raises(DataError, match=r"checksum mismatch"):
        fetch(url, tmp_path / "a.tar.gz", md5="0" * 32, timeout=5)
    server.shutdown()
    assert list(tmp_path.iterdir()) == []


def test_the_official_archive_is_downloaded_unpacked_and_read(tmp_path, monkeypatch):
    x = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    rows = x.transpose(0, 3, 1, 2).reshape(6, -1)
    files = {
        "train": {b"data": rows[:4], b"fine_labels": [0, 1, 2, 3]},
        "test": {b"data": rows[4:], b"fine_labels": [5, 6]},
        "meta": {b"fine_label_names": [f"c{i}".encode() for i in range(100)]},
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            data = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    body = buffer.getvalue()
    url, server = serve(body)
    monkeypatch.setitem(datasets_module.CIFAR_ARCHIVES, "cifar100", (url, hashlib.md5(body).hexdigest()))
    data = DATASETS.get("cifar100")(data_dir=tmp_path, download=True)
    server.shutdown()
    assert np.array_equal(data.train.x, x[:4]) and data.test.y.tolist() == [5, 6]
    assert "downloaded" in data.source and (tmp_path / "archive.tar.gz").exists()
