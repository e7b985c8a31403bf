"""Terminal output through the standard logging module (as timm does): every module logs to
``logging.getLogger(__name__)``; a command, or a Ray worker, installs the one terminal handler with ``setup``.
INFO goes to stdout as written; WARNING and above to stderr, prefixed by their level ("warning: ...")."""

from __future__ import annotations

import contextlib
import logging
import sys


class TerminalHandler(logging.Handler):
    """Looks sys.stdout/sys.stderr up at every record, so redirected (and captured) streams receive it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.WARNING:
                print(f"{record.levelname.lower()}: {text}", file=sys.stderr, flush=True)
            else:
                print(text, file=sys.stdout, flush=True)
        except Exception:  # logging must never take the command down: the standard handler's own policy
            self.handleError(record)


def setup(level: int = logging.INFO) -> None:
    """The harness's loggers print to the terminal from ``level`` on (once per process; later calls set the level)."""
    root = logging.getLogger("harness")
    if not any(isinstance(h, TerminalHandler) for h in root.handlers):
        root.addHandler(TerminalHandler())
    root.setLevel(level)
    root.propagate = False
    # MLflow logs every failed database call with its traceback (and the SQL); the harness says an outage in one
    # line of its own (harness.tracker.tracking: "could not reach ..., kept for later") and keeps what it could not send
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


@contextlib.contextmanager
def quiet(name: str, level: int = logging.WARNING):
    """Only ``level`` and above from logger ``name`` inside the block (a benchmark's trainers, say)."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


class _QuietFileHandler(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:  # a full disk must not print logging's traceback
        pass


@contextlib.contextmanager
def to_file(name: str, path):
    """Logger ``name``'s records go to the file ``path`` (appended), not the terminal, inside the block."""
    logger = logging.getLogger(name)
    try:
        handler: logging.Handler = _QuietFileHandler(path, delay=True)
    except OSError:
        handler = logging.NullHandler()
    before, propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [handler], False
    try:
        yield
    finally:
        logger.handlers, logger.propagate = before, propagate
        handler.close()
