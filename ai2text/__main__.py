"""``python -m ai2text`` is the same as the ``ai2text`` command."""

import sys

from ai2text.cli import main

sys.exit(main())
