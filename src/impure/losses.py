"""Moved to `impure.training.losses`; this import path keeps working for code written before the move, with a
DeprecationWarning, and will be removed in a later release."""

import warnings

from impure.training.losses import *  # noqa: F403
from impure.training.losses import __all__  # noqa: F401

warnings.warn("impure.losses moved to impure.training.losses; import it from there",
              DeprecationWarning, stacklevel=2)
