"""The client library: talking to an OVSDB server (tegadb or ovsdb-server).

What this layer owns, one module each:
- ``connection``: connecting to a remote, sending requests, matching replies
  to requests, handing notifications to the caller, in asyncio and through
  a blocking shell for scripts and commands;
- ``follower``: following one database of a source across reconnects and
  fail-over with ``monitor_cond_since`` (the replica's and the relay's base);
- ``replica`` (with ``rows`` for its values, ``sync_replica`` for scripts):
  an in-memory copy of chosen tables, kept current, with change callbacks
  and optimistic transactions.

What it never touches: a server's database or engine.  It knows the protocol
(``tegadb.protocol``) and may use the core's types and values to read what a
server sends.

``from tegadb.client import Replica`` (and the other names below) imports
the module on first use: the command-line client needs only ``connection``,
and start-up time counts there.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Connection": "connection", "SyncConnection": "connection", "RPCError": "connection",
    "Follower": "follower", "UpdateSink": "follower",
    "Replica": "replica", "Transaction": "replica", "ConflictError": "replica",
    "TransactionError": "replica", "Row": "rows", "Change": "rows", "NewRow": "rows",
    "SyncReplica": "sync_replica",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
