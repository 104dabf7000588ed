"""Console logging: the CLI's and the examples' (`configure_logging`: our progress on INFO, libraries'
chatter on WARNING), and the default of the Python API (`default_logging`: the same progress, only where
the application configured no logging)."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PACKAGE = "hf_transfer"

# Accelerate logs every file of every checkpoint at INFO; datasets and transformers are verbose too.
_QUIET = ("accelerate", "datasets", "transformers", "peft", "timm", "huggingface_hub", "urllib3", "PIL", "tensorboard")


def configure_logging(verbose: bool = False) -> None:
    """Log hf_transfer's progress to the console; the libraries below it only when they warn.

    Args:
        verbose (`bool`, defaults to `False`): DEBUG for everything, the libraries included.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=FORMAT)
    if not verbose:
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)


class _UntilConfigured(logging.StreamHandler):
    """Prints to stderr while the application has no logging of its own: once a root handler exists, the
    records reach it by propagation, and this one steps aside (nothing is printed twice)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def default_logging() -> None:
    """What `train`, `compare` and `rank` do first: log hf_transfer's progress as the CLI does, at INFO,
    when nothing is configured (no handler on the root logger or on `hf_transfer`); otherwise nothing, so
    an application's own logging setup decides. Only hf_transfer's logger is touched, never a library's
    or the root's. To silence it: `logging.getLogger("hf_transfer").setLevel(logging.WARNING)`."""
    package = logging.getLogger(PACKAGE)
    if logging.getLogger().handlers or package.handlers:
        return
    handler = _UntilConfigured()
    handler.setFormatter(logging.Formatter(FORMAT))
    package.addHandler(handler)
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)
