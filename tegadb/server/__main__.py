"""``python -m tegadb.server``: the tegadb-server command."""

import sys

from .main import main

sys.exit(main())
