"""Listening Unix sockets with safe permissions.

Rules (item 6 of issue 14; ovsdb-server's lib/socket-util-unix.c):
- The socket file gets mode `DEFAULT_SOCKET_MODE` (0770: owner and group
  connect, others do not) or the one asked for, whatever the umask.  Like
  ovsdb-server, the mode is set on the socket before bind, so the file is
  never more open than asked; then set again on the file, because bind
  applies the umask (under 077 the group would lose access).
- The socket's directory must not be writable by everyone unless it has the
  sticky bit: in such a directory any local user could remove the socket
  and bind their own in its place, and clients would hand them their
  transactions.  With the sticky bit (as on /tmp) only the owner may remove
  or rename it.  ovsdb-server does not check this; tegadb refuses to start
  unless told to (`--allow-unsafe-socket-dir`).
"""

from __future__ import annotations

import os
import socket
import stat

DEFAULT_SOCKET_MODE = 0o770


def check_directory(path: str) -> None:
    """Raises ValueError if the directory holding socket `path` is writable
    by everyone without the sticky bit.  A missing directory is left to bind
    to report."""
    directory = os.path.realpath(os.path.dirname(path) or ".")
    try:
        mode = os.stat(directory).st_mode
    except FileNotFoundError:
        return
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise ValueError(
            f"{path}: directory {directory} is writable by everyone (mode "
            f"{stat.S_IMODE(mode):04o}) without the sticky bit, so any local user could replace"
            " the socket; make it private (chmod o-w) or sticky (chmod +t), or pass"
            " --allow-unsafe-socket-dir")


def is_socket(path: str) -> bool:
    """Whether `path` is a Unix socket (not an error when it is missing)."""
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def bind(path: str, mode: int = DEFAULT_SOCKET_MODE) -> socket.socket:
    """A Unix stream socket bound to `path` with permissions `mode`, ready
    to listen.  A stale socket file left at `path` is replaced."""
    if is_socket(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), mode)
        sock.bind(path)
        os.chmod(path, mode)
    except BaseException:
        sock.close()
        raise
    return sock
