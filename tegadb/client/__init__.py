"""The client library: talking to an OVSDB server (tegadb or ovsdb-server).

What this layer owns: connecting to a remote, sending requests, matching
replies to requests, and handing notifications to the caller, in asyncio
and through a synchronous wrapper for scripts and commands.

What it never touches: a server's database or engine.  It knows the protocol
(``tegadb.protocol``) and may use the core's types and values to read what a
server sends.
"""
