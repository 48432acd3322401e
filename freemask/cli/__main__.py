"""``python -m freemask.cli``: the same as the ``freemask`` command."""

import sys

from freemask.cli.main import main

sys.exit(main())
