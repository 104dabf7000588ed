"""Task adapters, one per modality, in the ADAPTERS registry under their task name. Each composes a
ModelIO (`adapter.models`), an InputCodec (`adapter.inputs`) and CardSnippets (`adapter.card`): see base.py.

Each adapter is declared by where it is defined and imported by the first `ADAPTERS.get(task)`, so
naming the tasks (config checks, `--help`) imports no torch, timm or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_getattr
from ..core.registry import Registry

if TYPE_CHECKING:  # for type checkers (at run time, __getattr__ below imports them)
    from .audio import AudioClassificationAdapter  # noqa: F401
    from .base import CardSnippets, InputCodec, ModelIO, TaskAdapter  # noqa: F401
    from .image import ImageClassificationAdapter  # noqa: F401
    from .text import TextClassificationAdapter  # noqa: F401

ADAPTERS: Registry[type[TaskAdapter]] = Registry("task")
ADAPTERS.declare("image-classification", "hf_transfer.adapters.image:ImageClassificationAdapter")
ADAPTERS.declare("text-classification", "hf_transfer.adapters.text:TextClassificationAdapter")
ADAPTERS.declare("audio-classification", "hf_transfer.adapters.audio:AudioClassificationAdapter")

_EXPORTS = {
    "AudioClassificationAdapter": "audio",
    "CardSnippets": "base",
    "ImageClassificationAdapter": "image",
    "InputCodec": "base",
    "ModelIO": "base",
    "TaskAdapter": "base",
    "TextClassificationAdapter": "text",
}
__all__ = ["ADAPTERS", *sorted(_EXPORTS)]
__getattr__ = lazy_getattr(__name__, _EXPORTS)
