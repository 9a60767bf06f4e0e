"""torchvision, imported on first use and checked against torch: a torch and a torchvision of different releases
(what pip makes of a CPU-index install that could not reach the index) fail late and obscurely, e.g.
"operator torchvision::nms does not exist"; here they fail at once, with both versions and the command that fixes
them."""

from __future__ import annotations

import re
from importlib import metadata
from types import ModuleType

__all__ = ["import_torchvision", "matching_torchvision"]

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def matching_torchvision(torch_version: str) -> str | None:
    """The torchvision release series that matches a torch version ("2.14.1+cpu" -> "0.29"), or None where the
    pairing rule (torch 2.N with torchvision 0.(N + 15)) does not apply."""
    found = re.match(r"(\d+)\.(\d+)", torch_version)
    if not found or int(found[1]) != 2:
        return None
    return f"0.{int(found[2]) + 15}"


def _installed(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _fix(torch_version: str) -> str:
    release = torch_version.split("+")[0]
    series = matching_torchvision(torch_version)
    pair = f'torch=={release} "torchvision=={series}.*"' if series else f"torch=={release} torchvision"
    return (f"install a matching pair: `pip install {pair}` (on a machine without a GPU, PyTorch's CPU build: "
            f"`pip install {pair} --index-url {CPU_INDEX}`)")


def import_torchvision() -> ModuleType:
    """`import torchvision`, checked against the installed torch.

    Raises:
        ImportError: torchvision is missing, fails to import, or belongs to another torch release; the message
            names both versions and the pip command that installs a matching pair.
    """
    import torch

    try:
        import torchvision
    except (ImportError, RuntimeError, OSError) as error:  # a build for another torch fails as it loads its ops
        cause = f"{type(error).__name__}: {error}"
        raise ImportError(f"torchvision {_installed('torchvision')} cannot be imported beside torch "
                          f"{torch.__version__} ({cause}); {_fix(torch.__version__)}") from error
    series = matching_torchvision(torch.__version__)
    if series is not None and not torchvision.__version__.startswith(series + "."):
        raise ImportError(f"torch {torch.__version__} and torchvision {torchvision.__version__} do not match (torch "
                          f"{torch.__version__.split('+')[0]} needs torchvision {series}.x); {_fix(torch.__version__)}")
    return torchvision
