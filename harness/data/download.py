"""Downloads that cannot hang: a connect and read timeout, progress on the terminal, the checksum checked, and
the partial file removed on any failure."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness.core import environment
from harness.data.errors import DataError

logger = logging.getLogger(__name__)


def fetch(url: str, dest: Path, md5: str | None = None, timeout: float | None = None) -> Path:
    """``url`` into ``dest`` (through ``dest``.part, renamed at the end), its MD5 checked when given; ``timeout``:
    seconds without a byte (or to connect) before it is given up (a stalled server fails, never hangs)."""
    timeout = environment.seconds("HARNESS_DOWNLOAD_TIMEOUT_S") if timeout is None else timeout
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0)
            digest, done, shown, start = hashlib.md5(), 0, time.monotonic(), time.monotonic()
            logger.info(f"downloading {url} ({total / 1e6:.0f} MB)" if total else f"downloading {url}")
            while chunk := response.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if time.monotonic() - shown >= 5 or (total and done == total):
                    shown = time.monotonic()
                    rate = done / max(shown - start, 1e-9) / 1e6
                    of = f" of {total / 1e6:.0f} MB ({100 * done / total:.0f}%)" if total else " MB"
                    logger.info(f"  {done / 1e6:.0f}{of}, {rate:.1f} MB/s")
        if total and done != total:
            raise DataError(f"downloading {url}: the connection closed after {done:,} of {total:,} bytes")
        if md5 and digest.hexdigest() != md5:
            raise DataError(f"downloading {url}: checksum mismatch (MD5 {digest.hexdigest()}, expected {md5})")
        os.replace(part, dest)
        return dest
    except (socket.timeout, TimeoutError):
        raise DataError(
            f"downloading {url}: no answer for {timeout:.0f} s, the server stalled; the partial file is removed. "
            f"Try again later, or download it yourself into {dest.parent}"
        ) from None
    except urllib.error.URLError as err:
        raise DataError(f"downloading {url} failed: {err.reason}; download it yourself into {dest.parent}") from None
    except OSError as err:
        raise DataError(f"downloading {url} into {dest} failed: {err}") from None
    finally:
        part.unlink(missing_ok=True)


def extract(archive: Path, into: Path) -> None:
    """A .tar.gz unpacked with tarfile's "data" filter: no absolute paths, links out of ``into`` or devices."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"{archive}: cannot unpack ({err}); delete it and download again") from None
