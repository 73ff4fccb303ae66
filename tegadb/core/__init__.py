"""The core: OVSDB's data model and transaction semantics, with no I/O.

What this layer owns:
- schemas, types and values (atoms, sets, maps; JSON in and out; constraints);
- the in-memory database: tables, rows and indexes (tables.py), and
  ``transact`` (database.py), which runs ops (ops.py) against a private view
  (view.py) and, when they all succeed, commits (commit.py) with
  ovsdb-server's checks in ovsdb-server's order (referential integrity,
  garbage collection, maxRows, weak references, unique indexes, versions);
- conditions and mutations;
- monitors (update / update2 / update3), the transaction history that
  ``monitor_cond_since`` resumes from (history.py), and the lock table;
- a commit's change set as JSON and back (changesets.py): what a log record
  stores, though not the record around it (the server's codec).

What it never touches: sockets, files, the event loop, the clock, the
log's record format.  Callers pass in elapsed times and get back plain values:
result arrays, change sets, notification bodies.

Ordering rules the layers above rely on:
- A transaction either commits as a whole or changes nothing.
- ``Database.transact`` returns the change set; the caller records it and
  feeds it to the monitors (``MonitorHub.commit``) before it sends the
  transaction's reply, so a client sees its monitors' updates first.
- Change sets and transaction ids reach the monitors in commit order.

Imports: the standard library, ujson, and nothing above this layer.
"""

from ..native import use_compiled

use_compiled(__path__, "core")
