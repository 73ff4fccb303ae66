"""tegadb: a schema-driven configuration database speaking OVSDB (RFC 7047)."""

__version__ = "0.1.0"
