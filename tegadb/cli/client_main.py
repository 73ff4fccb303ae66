"""The ``tegadb-client`` command: one line, routed to the module that owns it.

- ovs-vsctl's database commands (``list``, ``get``, ``set``...: dbcommands.py),
  recognized by their name or their options (``--db``, ``--if-exists``...);
- ``watch`` (watch.py) and ``completion`` / ``--complete`` (completion.py);
- everything else: ovsdb-client's commands (tegadb_client.py).

The console script and bin/tegadb-client run this module's ``main``; the
modules it routes to depend on tegadb_client.py, never the other way round.
"""

from __future__ import annotations

import sys

from . import completion, dbcommands, tegadb_client
from .tegadb_client import reporting_errors, write_out

HELP_OPTIONS = (["--help"], ["-h"])
MORE_USAGE = f"""
Database commands (as ovs-vsctl's, for any schema; "{dbcommands.USAGE_HINT}"
for more):
  {dbcommands.COMMAND_LIST}

  watch [SERVER] [DATABASE] TABLE [COLUMN...] [--where=COND]... [--since=ID] [--format=json]
    print each change to TABLE as it happens ("tegadb-client watch --help" for more)

  completion bash|zsh
    print a shell completion script: source <(tegadb-client completion bash)
"""


def main(argv: list[str] | None = None) -> int:
    """Run one tegadb-client line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv in HELP_OPTIONS:
        return write_out(tegadb_client.USAGE + MORE_USAGE)
    if argv[:1] == ["--complete"]:
        return reporting_errors(lambda: completion.complete(argv[1:]))
    index, _ = dbcommands.command_word(argv)
    word = None if index is None else argv[index]
    rest = argv[:index] + argv[index + 1:] if index is not None else argv
    if word == "watch":  # its options may come before or after the word
        from . import watch  # imports rich on a terminal only

        return reporting_errors(lambda: watch.main(rest))
    if word == "completion":
        return reporting_errors(lambda: completion.script(rest))
    if dbcommands.owns(argv):
        return reporting_errors(lambda: write_out(dbcommands.run(argv)))
    return tegadb_client.main(argv)


if __name__ == "__main__":
    sys.exit(main())
