"""The server: serving databases over the network, and keeping them.

What this layer owns:
- the log of committed transactions: one codec for its records
  (``records``), behind one storage interface (``storage``) with a file
  implementation (``journal``) and an in-memory one.  Which storage a
  database runs on is chosen where it is opened; the core, the monitors
  and the methods never know it;
- each served database's commit pipeline (``service``): run a transaction
  in the core, append its record, feed the monitors, answer;
- client sessions and the RPC methods (``methods``), our own registry
  called directly for OVSDB's JSON-RPC 1.0; JSON-RPC 2.0 requests go
  through jsonrpcserver (``jsonrpc2``, imported on the first such request,
  so a server that never sees one never loads it); the ``_Server``
  database (``server_db``);
- the asyncio shell (``connections``): listeners, connection loop,
  backpressure, probes; and the command (``main``).

Ordering rules, which every path through this layer keeps:
- Within one event-loop turn, commits are appended to the storage's buffer;
  at the end of the turn the storage is flushed once (one write, and one
  fsync if any transaction of the turn asked for it: group commit) before
  any reply of that turn is sent.
- A session's pending monitor updates are sent before any reply to it.
- Nothing acknowledged is lost: a reply goes out only after its record is
  written (and synced, for a durable commit).

What it never touches: the core's internals (tables' rows are changed only
through ``Database``).  Only ``connections`` and ``main`` import asyncio.
"""

from ..native import use_compiled

use_compiled(__path__, "server")
