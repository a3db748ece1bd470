"""``python -m inference.cli``: the ``ctxdefect`` command."""

import sys

from inference.cli import main

sys.exit(main())
