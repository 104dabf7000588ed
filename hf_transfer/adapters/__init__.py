"""Task adapters. Importing this package registers every adapter in ADAPTERS."""

from .audio import AudioClassificationAdapter
from .base import ADAPTERS, TaskAdapter
from .image import ImageClassificationAdapter
from .text import TextClassificationAdapter

__all__ = [
    "ADAPTERS",
    "AudioClassificationAdapter",
    "ImageClassificationAdapter",
    "TaskAdapter",
    "TextClassificationAdapter",
]
