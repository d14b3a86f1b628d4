"""``python -m hil run --device URL|sim --profile NAME [--report FILE] [--yes]``."""

import sys

from hil.runner import main

sys.exit(main())
