"""tegadb: a schema-driven configuration database speaking OVSDB (RFC 7047)."""

from .native import use_compiled

__version__ = "0.1.0"

use_compiled(__path__)
