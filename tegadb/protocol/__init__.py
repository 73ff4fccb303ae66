"""The protocol: OVSDB's JSON-RPC on a byte stream, with no I/O.

What this layer owns, one module each:
- ``framer``: bytes in, parsed JSON messages out (concatenated JSON texts,
  no delimiter), with a size cap and a nesting cap; a malformed stream
  raises ``ProtocolError`` with the reason;
- ``messages``: the shapes of JSON-RPC 1.0 (the OVSDB dialect) and 2.0
  messages, their classification, the bytes of replies, errors and
  notifications, and the JSON-RPC 2.0 error codes;
- ``remotes``: ``tcp:``, ``unix:``, ``ssl:`` and the passive ``p*`` forms;
- ``tls``: the TLS contexts both ends build from key, certificate and CA files.

What it never touches: sockets, the event loop, databases.  The server and
the client drive it; tests drive it with plain bytes.

Rules: on the OVSDB dialect a message carries only method, params, result,
error and id, and a request or notification without params is a protocol
error.  A request carrying ``"jsonrpc": "2.0"`` is answered in 2.0.

Imports: the standard library, ujson, and ``tegadb.core`` (its error type).
"""

from ..native import use_compiled

use_compiled(__path__, "protocol")
