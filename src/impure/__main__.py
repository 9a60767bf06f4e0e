"""Allow `python -m impure ...`."""

import sys

from impure.cli import main

sys.exit(main())
