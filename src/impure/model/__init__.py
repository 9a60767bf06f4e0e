"""The IMPure purifier's network (no Hub I/O: `impure.Purifier`, defined in `impure.hub`, adds it)."""

from .purifier import PurifierModel

__all__ = ["PurifierModel"]


def __getattr__(name: str):
    if name == "Purifier":  # moved: the model layer does not import the Hub layer above it
        raise ImportError("impure.model.Purifier moved: use `from impure import Purifier` (the purifier with "
                          "from_pretrained / save_pretrained), or impure.model.PurifierModel for the network alone")
    raise AttributeError(f"module 'impure.model' has no attribute {name!r}")
