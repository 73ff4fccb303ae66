"""The codec of log records: the one place that knows their members.

Every storage (the file journal, the in-memory log) holds a header and then
records, each a JSON object:

    {"format":"tegadb-journal","version":1,"schema":<schema>}        the header
    {"seq":N,"txn":"<uuid>","date":<ms>,"comment":..,"writer":..,"changes":{..}}
                                                     one per transaction
    {"seq":N,"txn":"<uuid>","date":<ms>,"snapshot":true,"changes":{..}}
                                                     every row, at position N
    {"seq":N,"txn":"<uuid>","date":<ms>,"snapshot":true,"schema":{..},"changes":{..}}
                                  a conversion: every row, under a new schema

- ``seq`` is the record's position in the log: 1 for the first transaction,
  one more for each next one.  A snapshot has the position of the last
  transaction it covers (0 for an empty database).
- ``txn`` is the transaction id that monitors report (update3,
  monitor_cond_since); ``date`` is wall-clock milliseconds; ``comment`` (the
  comment ops' text) and ``writer`` (the client's address) are there only
  when known.
- ``changes`` is the change set as JSON (``core.changesets``).
- ``schema``, only in a snapshot, is the schema the log follows from that
  record on: a conversion in a log shared by a cluster, which every member
  applies at the same position (a file's conversion rewrites its header).

A file journal seals each line, the header included, with a checksum:
the line's JSON ends with a last member ``"crc32":"<8 hex digits>"``, the
CRC-32 (zlib's) of the line's bytes before that member's comma, so a line
stays one JSON object that `jq` reads.  ``seal`` writes it and ``unseal``
checks it and gives the JSON without it, which ``from_json`` reads.  CRC-32
was chosen by measurement (BENCHMARKS.md, "Journal checksums"): it finds
every burst of up to 32 flipped bits, costs ~0.2 us on a 500-byte record,
and needs no dependency.  Lines without a seal are the format before
checksums, which the journal still reads (its rules say when).  The etcd
log does not seal its lines: etcd checksums what it stores.

``from_json`` is strict, as python-ovs's parsers are: it checks every
member's type, rejects unknown members, and its message names the member
that is wrong.  ``to_json`` writes the members in the order above, so a
record read and written again is the same line.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any, Final
from zlib import crc32  # a global, not a module's attribute, per line replayed

FORMAT = "tegadb-journal"
VERSION = 1


class RecordError(ValueError):
    """A header or record whose JSON does not have the codec's shape."""


# A sealed line ends with _SEAL_START, 8 hex digits and _SEAL_END.
# Final: constants of the compiled module, not looked up per line.
_SEAL_START: Final = b',"crc32":"'
_SEAL_END: Final = b'"}\n'
_SEAL_SIZE: Final = len(_SEAL_START) + 8 + len(_SEAL_END)
_HEX_DIGITS: Final = b"0123456789abcdef"
# The seal written comes from tables of the 256 byte values, with its start
# and end built in: a seal is written for every committed transaction, and
# formatting it (b"%s%08x%s" % ...) cost ~1.8k instructions compiled, more
# than the CRC of a small record; two concatenations cost ~0.7k.
_HEX: Final = [b"%02x" % byte for byte in range(256)]
_START_AND_HEX: Final = [_SEAL_START + digits for digits in _HEX]
_HEX_AND_END: Final = [digits + _SEAL_END for digits in _HEX]


def seal(text: bytes) -> bytes:
    """The line for `text`, one compact JSON object (not empty, no
    newline), with its checksum as the last member."""
    body = text[:-1]
    return body + seal_end(crc32(body))


def seal_end(crc: int) -> bytes:
    """What follows a line's JSON, without its closing brace, whose CRC-32 is
    `crc` (for a line written in pieces, with a running checksum)."""
    return (_START_AND_HEX[crc >> 24] + _HEX[(crc >> 16) & 255] + _HEX[(crc >> 8) & 255]
            + _HEX_AND_END[crc & 255])


def unseal(line: bytes) -> bytes | None:
    """The JSON text of a sealed `line` (ending with a newline) without its
    seal, or None if `line` has no seal; RecordError if its checksum does
    not match."""
    end = len(line) - _SEAL_SIZE
    if end <= 0:
        return None
    # The usual line passes `_has_seal`; only a line that fails it pays
    # for finding out whether it has a seal at all.
    body = line[:end]
    actual = crc32(body)
    if _has_seal(line, end, actual):
        return body + b"}"
    if not line.startswith(_SEAL_START, end) or not line.endswith(_SEAL_END):
        return None
    written = line[end + len(_SEAL_START):-len(_SEAL_END)].decode(errors="replace")
    raise RecordError(f"{end} bytes have CRC-32 {actual:08x} but the line says {written}")


def _has_seal(line: bytes, end: int, crc: int) -> bool:
    """Whether `line` ends, from `end`, with the seal of checksum `crc`.
    Its digits are compared one by one: formatting the seal to compare it
    whole cost replay ~1,400 instructions a line, ~4 ms of a 20k-line start."""
    digit = end + len(_SEAL_START)
    if line[end:digit] != _SEAL_START or not line.endswith(_SEAL_END):
        return False
    for shift in range(28, -4, -4):
        if line[digit] != _HEX_DIGITS[(crc >> shift) & 15]:
            return False
        digit += 1
    return True


class Header:
    """What a log holds before its records: the format and the schema."""

    __slots__ = ("schema",)

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema

    @staticmethod
    def from_json(obj: Any) -> Header:
        if type(obj) is not dict:
            raise RecordError("header is not a JSON object")
        if obj.get("format") != FORMAT:
            raise RecordError(f"not a {FORMAT} file")
        if obj.get("version") != VERSION:
            raise RecordError(f"unsupported {FORMAT} version {obj.get('version')!r}")
        schema = obj.get("schema")
        if type(schema) is not dict:
            raise RecordError('header has no "schema" object')
        if len(obj) != 3:
            raise RecordError(f"header has unknown member {_unknown(obj, _HEADER_MEMBERS)}")
        return Header(schema)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "schema": self.schema}

    @property
    def name(self) -> str:
        """The database's name, as its schema says."""
        name = self.schema.get("name")
        return name if type(name) is str else ""


class Record:
    """One log record: a committed transaction, or a snapshot of every row."""

    __slots__ = ("changes", "comment", "date", "schema", "seq", "snapshot", "txn", "writer")

    def __init__(self, seq: int, txn: str, date: int, changes: dict[str, Any],
                 comment: str | None = None, writer: str | None = None,
                 snapshot: bool = False, schema: dict[str, Any] | None = None) -> None:
        self.seq = seq
        self.txn = txn
        self.date = date
        self.changes = changes
        self.comment = comment
        self.writer = writer
        self.snapshot = snapshot
        self.schema = schema

    @staticmethod
    def from_json(obj: Any) -> Record:
        """The record ``obj`` holds; RecordError names the member that is wrong."""
        if type(obj) is not dict:
            raise RecordError("record is not a JSON object")
        # Replay runs this once per record: the usual record passes these
        # checks at once, only a bad one pays for finding which member is
        # wrong.  A member present as null is caught by the count.
        members_of: dict[str, Any] = obj  # typed: a direct dict lookup when compiled
        seq = members_of.get("seq")
        txn = members_of.get("txn")
        date = members_of.get("date")
        changes = members_of.get("changes")
        writer = members_of.get("writer")
        comment = snapshot = schema = None
        # A transaction's usual members are all it has when they are all
        # there is room for: the rarer members are looked up only otherwise.
        if len(members_of) != 4 + (writer is not None):
            comment = members_of.get("comment")
            snapshot = members_of.get("snapshot")
            schema = members_of.get("schema")
        members = (4 + (comment is not None) + (writer is not None) + (snapshot is not None)
                   + (schema is not None))
        if (type(seq) is not int or seq < 0 or type(txn) is not str or type(date) is not int
                or type(changes) is not dict
                or (comment is not None and type(comment) is not str)
                or (writer is not None and type(writer) is not str)
                or (snapshot is not None and type(snapshot) is not bool)
                or (schema is not None and (type(schema) is not dict or snapshot is not True))
                or len(obj) != members):
            raise RecordError(_problem(obj))
        return Record(seq, txn, date, changes, comment, writer, snapshot is True, schema)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"seq": self.seq, "txn": self.txn, "date": self.date}
        if self.comment is not None:
            obj["comment"] = self.comment
        if self.writer is not None:
            obj["writer"] = self.writer
        if self.snapshot:
            obj["snapshot"] = True
        if self.schema is not None:
            obj["schema"] = self.schema
        obj["changes"] = self.changes
        return obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"Record({self.to_json()!r})"


def _is_str(value: Any) -> bool:
    return type(value) is str


# Each member: its name, what it must be, whether a record must have it,
# and the check (the same as in Record.from_json).
_RECORD_MEMBERS: list[tuple[str, str, bool, Callable[[Any], bool]]] = [
    ("seq", "a non-negative integer", True, lambda v: type(v) is int and v >= 0),
    ("txn", "a string", True, _is_str),
    ("date", "an integer", True, lambda v: type(v) is int),
    ("comment", "a string", False, _is_str),
    ("writer", "a string", False, _is_str),
    ("snapshot", "a boolean", False, lambda v: type(v) is bool),
    ("schema", "an object (in a snapshot)", False, lambda v: type(v) is dict),
    ("changes", "an object", True, lambda v: type(v) is dict)]
_HEADER_MEMBERS = ("format", "version", "schema")


def _problem(obj: dict[str, Any]) -> str:
    """What is wrong with a record that failed ``Record.from_json``'s checks."""
    for name, kind, required, check in _RECORD_MEMBERS:
        if name not in obj:
            if required:
                return f'record has no "{name}"'
        elif not check(obj[name]):
            return f'record "{name}" is not {kind}: {_brief(obj[name])}'
    if "schema" in obj and obj.get("snapshot") is not True:
        return 'record has a "schema" but is not a snapshot'
    return f"record has unknown member {_unknown(obj, [m[0] for m in _RECORD_MEMBERS])}"


def _unknown(obj: dict[str, Any], known: Container[str]) -> str:
    return ", ".join(f'"{name}"' for name in obj if name not in known)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


__all__ = ["FORMAT", "VERSION", "Header", "Record", "RecordError", "seal", "seal_end", "unseal"]
