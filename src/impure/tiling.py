"""Moved to `impure.defences.tiling`; this import path keeps working for code written before the move, with a
DeprecationWarning, and will be removed in a later release."""

import warnings

from impure.defences.tiling import *  # noqa: F403
from impure.defences.tiling import __all__  # noqa: F401

warnings.warn("impure.tiling moved to impure.defences.tiling; import it from there",
              DeprecationWarning, stacklevel=2)
