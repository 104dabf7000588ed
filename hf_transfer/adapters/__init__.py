"""Task adapters. Importing this package registers every adapter in ADAPTERS."""

from .base import ADAPTERS, TaskAdapter
from .image import ImageClassificationAdapter

__all__ = ["ADAPTERS", "ImageClassificationAdapter", "TaskAdapter"]
