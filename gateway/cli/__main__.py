"""``python -m gateway.cli`` is ``evpay``."""

import sys

from gateway.cli import main

sys.exit(main())
