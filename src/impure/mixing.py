"""Moved to `impure.training.mixing`; this import path keeps working for code written before the move, with a
DeprecationWarning, and will be removed in a later release."""

import warnings

from impure.training.mixing import *  # noqa: F403
from impure.training.mixing import __all__  # noqa: F401

warnings.warn("impure.mixing moved to impure.training.mixing; import it from there",
              DeprecationWarning, stacklevel=2)
