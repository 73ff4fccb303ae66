"""The tegadb-client commands with a command line of their own: ovs-vsctl's
database commands (dbcommands.py), ``watch`` (watch.py) and shell completion
(completion.py).  tegadb_client.main hands a line here first."""

from __future__ import annotations

from .tegadb_client import _write


def dispatch(argv: list[str]) -> int | None:
    """Run ``argv`` if one of these commands owns it: its exit status; else None."""
    from . import dbcommands

    if dbcommands.owns(argv):
        return _write(dbcommands.run(argv))
    return None
