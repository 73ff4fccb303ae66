"""The protocol: OVSDB's JSON-RPC on a byte stream, with no I/O.

What this layer owns:
- framing: bytes in, parsed JSON messages out (concatenated JSON texts, no
  delimiter), with a size cap and a nesting cap; a malformed stream raises
  ``ProtocolError`` with the reason;
- the shapes of JSON-RPC 1.0 (the OVSDB dialect) and 2.0 messages, their
  classification, and the bytes of replies, errors and notifications;
- remotes (``tcp:``, ``unix:``, ``ssl:`` and the passive ``p*`` forms) and
  the TLS contexts both ends build from key, certificate and CA files.

What it never touches: sockets, the event loop, databases.  The server and
the client drive it; tests drive it with plain bytes.

Rules: on the OVSDB dialect a message carries only method, params, result,
error and id.  A request carrying ``"jsonrpc": "2.0"`` is answered in 2.0.

Imports: the standard library, ujson, and ``tegadb.core`` (its error type).
"""

from ..native import use_compiled

use_compiled(__path__, "protocol")
