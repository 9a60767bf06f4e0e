"""The IMPure purifier model."""

from .purifier import Purifier

__all__ = ["Purifier"]
