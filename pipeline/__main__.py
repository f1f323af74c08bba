"""``python -m pipeline`` is the same as the ``ai2text`` command."""

import sys

from pipeline.cli import main

sys.exit(main())
