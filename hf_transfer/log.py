"""Console logging for the CLI and the examples: our progress on INFO, libraries' chatter on WARNING."""

from __future__ import annotations

import logging

# Accelerate logs every file of every checkpoint at INFO; datasets and transformers are verbose too.
_QUIET = ("accelerate", "datasets", "transformers", "peft", "timm", "huggingface_hub", "urllib3", "PIL", "tensorboard")


def configure_logging(verbose: bool = False) -> None:
    """Log hf_transfer's progress to the console; the libraries below it only when they warn.

    Args:
        verbose (`bool`, defaults to `False`): DEBUG for everything, the libraries included.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not verbose:
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)
