"""impure: IMPure adversarial purification (Liu, Lian, Zhang, Xiao; arXiv 2311.15339) for any PyTorch
image classifier."""

from .classifier import PurifiedClassifier
from .classifiers import load_classifier
from .config import PurifierConfig, list_presets
from .device import select_device, select_dtype, tune_cpu_allocator

__version__ = "0.1.0"


def __getattr__(name: str):
    # The model is built on timm's blocks: import it on first use, so that `import impure` stays light.
    if name == "Purifier":
        from .hub import Purifier

        return Purifier
    raise AttributeError(f"module 'impure' has no attribute {name!r}")


__all__ = [
    "Purifier",
    "PurifierConfig",
    "PurifiedClassifier",
    "list_presets",
    "load_classifier",
    "select_device",
    "select_dtype",
    "tune_cpu_allocator",
    "__version__",
]
