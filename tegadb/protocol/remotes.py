"""Remotes in Open vSwitch syntax: where to connect, or where to listen.

Active remotes (clients connect): ``tcp:IP[:PORT]``, ``ssl:IP[:PORT]`` and
``unix:PATH``.  Passive remotes (servers listen): ``ptcp:[PORT][:IP]``,
``pssl:[PORT][:IP]`` and ``punix:PATH``.  Ports default to 6640 (IANA's
OVSDB port), a passive IP to every IPv4 address; IPv6 addresses go in
brackets.  Every parse error names the remote it rejects.
"""

from __future__ import annotations

DEFAULT_PORT = 6640
PASSIVE_KINDS = ("ptcp", "pssl", "punix")
_ANY_IPV4 = "0.0.0.0"


class Remote:
    """One parsed remote; ``path`` for the Unix kinds, ``host`` and ``port``
    for the others.  Immutable, equal to (and hashed as) any Remote with
    the same members; not a dataclass, whose methods would be generated at
    every start."""

    __slots__ = ("host", "kind", "path", "port")

    def __init__(self, kind: str, host: str = "", port: int = DEFAULT_PORT,
                 path: str = "") -> None:
        self.kind = kind
        self.host = host
        self.port = port
        self.path = path

    def _members(self) -> tuple[str, str, int, str]:
        return (self.kind, self.host, self.port, self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Remote) and self._members() == other._members()

    def __hash__(self) -> int:
        return hash(self._members())

    def __repr__(self) -> str:
        return f"Remote{self._members()!r}"

    @property
    def is_unix(self) -> bool:
        return self.kind in ("unix", "punix")

    @property
    def uses_tls(self) -> bool:
        return self.kind in ("ssl", "pssl")

    def __str__(self) -> str:
        if self.is_unix:
            return f"{self.kind}:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.kind in PASSIVE_KINDS:
            return f"{self.kind}:{self.port}:{host}"
        return f"{self.kind}:{host}:{self.port}"


def parse_active(text: str) -> Remote:
    """A remote to connect to: ``tcp:IP[:PORT]``, ``ssl:IP[:PORT]`` or ``unix:PATH``."""
    kind, _, rest = text.partition(":")
    if kind == "unix" and rest:
        return Remote(kind, path=rest)
    if kind in ("tcp", "ssl"):
        if rest.startswith("["):
            host, _, port = rest[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = rest.partition(":")
        if host and (not port or _valid_port(port)):
            return Remote(kind, host, int(port) if port else DEFAULT_PORT)
    raise ValueError(f'"{text}": not a valid remote (use tcp:IP:PORT, ssl:IP:PORT or unix:PATH)')


def parse_passive(text: str) -> Remote:
    """A remote to listen on: ``ptcp:[PORT][:IP]``, ``pssl:[PORT][:IP]`` or ``punix:PATH``."""
    kind, _, rest = text.partition(":")
    if kind == "punix":
        if not rest:
            raise ValueError(f"{text}: punix: needs a path")
        return Remote(kind, path=rest)
    if kind in ("ptcp", "pssl"):
        port_text, _, host = rest.partition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if port_text and not _valid_port(port_text):
            raise ValueError(f"{text}: bad port {port_text!r}")
        return Remote(kind, host or _ANY_IPV4, int(port_text) if port_text else DEFAULT_PORT)
    raise ValueError(f"{text}: unknown remote type (use ptcp:, punix: or pssl:)")




def _valid_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) <= 65535
