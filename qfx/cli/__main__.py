"""`python -m qfx.cli ...`: the same as the `qfx` command."""

import sys

from qfx.cli import main

sys.exit(main())
