"""TLS contexts for both ends, as Open vSwitch sets them up.

Each side shows its certificate and checks the peer's against the CA
certificate; host names are not checked (OVS peers are named by address,
and their certificates by the CA that signed them).  A server given no CA
certificate accepts clients without one.
"""

from __future__ import annotations

import ssl


def tls_context(private_key: str, certificate: str, ca_cert: str | None, *,
                server: bool) -> ssl.SSLContext:
    """The context for the server (``pssl:``) or the client (``ssl:``) end."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_cert_chain(certificate, private_key)
    if ca_cert:
        context.load_verify_locations(ca_cert)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
