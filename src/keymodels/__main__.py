"""``python -m keymodels``: the same as the ``keymodels`` command."""

import sys

from .cli import main

sys.exit(main())
