"""``python -m sweeper``: the same command as ``sweeper`` (worker processes start this way)."""

import sys

from sweeper.launch.cli import main

sys.exit(main())
