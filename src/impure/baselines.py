"""Moved to `impure.defences.baselines`; this import path keeps working for code written before the move, with a
DeprecationWarning, and will be removed in a later release."""

import warnings

from impure.defences.baselines import *  # noqa: F403
from impure.defences.baselines import __all__  # noqa: F401

warnings.warn("impure.baselines moved to impure.defences.baselines; import it from there",
              DeprecationWarning, stacklevel=2)
