"""``python -m diffeosense.cli ...``: the ``diffeosense`` command without its script."""

import sys

from . import main

sys.exit(main())
