"""Entry point of ``python -m mcl.report``."""

import sys

from mcl.report.cli import main

sys.exit(main())
