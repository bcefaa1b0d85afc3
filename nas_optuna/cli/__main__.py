"""``python -m nas_optuna.cli``."""

import sys

from nas_optuna.cli import main

sys.exit(main())
