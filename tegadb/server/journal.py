"""The database journal: the file storage, one JSON-lines file per database.

This is the only module that touches database files.  Line 1 is the
header, then one record per line (their members: ``records``), each one
compact JSON object, so `jq` reads a journal as it is.

Rules:
- Every line goes through the records codec, read or written.  `seq` grows
  strictly from record to record; a snapshot can only be the first record.
  The journal checks both and leaves the changes' content to its caller.
- Appending buffers in memory; `flush` writes everything buffered with one
  write (group commit) and syncs it on request.  It syncs with fdatasync,
  as ovsdb-server does: an append needs its bytes and the new file size on
  disk, not the timestamps (~7% off a durable commit's round trip here).
  A failed write or sync is undone (the file is cut back to its last good
  record) and raised as JournalError, so a later record is never glued to
  half of an earlier one.
- Every line written is sealed with a checksum (``records.seal``) and
  every sealed line read is verified, so a flipped byte in one cannot
  reach memory.  A file written before checksums (an unsealed header) is read as
  it is and then appended to with sealed records: from the first sealed
  line on, every line must be sealed, so a file that has checksums never
  lets an unsealed line through.  Its old records are checked as they were
  (JSON and members only) until a compaction rewrites the whole file
  sealed; `check` counts them.
- Replay drops a last line without its newline (a write cut short by a
  crash) with a warning and cuts it off the file.  Any other damage, the
  last line's included, is an error naming
  the file, line and byte offset.  `check` reports the same; `repair`
  saves a copy of the file and cuts it before its first damaged line.
- Compaction writes `<file>.tmp`, fsyncs it, renames it over the file and
  fsyncs the directory: a crash leaves either the old file or the new one.
  A running server compacts in the background (`begin_compaction`): the
  snapshot, taken from a frozen view of the rows, is serialized in chunks,
  written and fsynced by a worker thread while records go on being
  appended to the file; the records appended meanwhile are copied after it
  (most by the worker, the last few by `Compaction.finish`, in the loop),
  then the new file is synced and renamed into place.  A compaction that
  fails leaves the old file in use, whole.
- A new database file gets mode `DEFAULT_FILE_MODE` (0640, as ovsdb-server's
  0660 under the usual umask 022) or the one asked for, whatever the umask.
  Compaction (and so conversion) gives the new file the mode of the one it
  replaces, so an operator's chmod survives it.
- The file is locked (flock) while a Journal or `repair` has it open for
  writing.  A read-only Journal takes no lock, so tools can read a journal
  that a server is writing; it reads the file as it was when opened.
"""

from __future__ import annotations

import fcntl
import logging
import os
import zlib
from collections.abc import Iterator
from typing import IO, Any, NamedTuple

import ujson
from ujson import loads as json_loads  # a global, not a module's attribute, per line

from .records import Header, Record, RecordError, seal, seal_end, unseal
from .storage import Storage, StorageError

MiB = 1024 * 1024
# Owner reads and writes, group reads: schemas hold secrets (Wi-Fi and VPN keys).
DEFAULT_FILE_MODE = 0o640

log = logging.getLogger(__name__)


def file_mode(text: str) -> int:
    """Permission bits written in octal (``0640`` or ``640``), as chmod takes
    them; for command-line options."""
    mode = int(text, 8)
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{text}: not a permission mode (0 to 0777)")
    return mode


class JournalError(StorageError):
    """A journal file cannot be read, written or locked."""


class _BadLine(Exception):
    """Why one line of a journal is not a valid header or record."""


def create(path: str, header: Header, mode: int = DEFAULT_FILE_MODE) -> None:
    """Creates a journal holding just the header (an empty database), with
    permissions `mode` whatever the umask.  Fails if `path` exists."""
    data = _line(header.to_json())
    try:
        fd = _create_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as e:
        raise _error(path, e) from None
    try:
        _write_all(fd, data)
        os.fsync(fd)
    except OSError as e:
        _unlink_quietly(path)
        raise _error(path, e) from None
    finally:
        os.close(fd)
    _fsync_directory(path)


class Journal(Storage):
    """An open journal, appended to by one process at a time."""

    def __init__(self, path: str, fd: int, reader: _Reader, read_only: bool) -> None:
        """Use `Journal.open`."""
        self.path = self.name = path
        self.header = reader.header
        self.read_only = read_only
        self.last_seq = -1       # of the last record replayed or appended
        self._fd = fd
        self._reader: _Reader | None = reader  # until replay has begun
        self._pending: list[bytes] = []
        self._written_seq = -1   # of the last record in the file
        self._size = 0           # bytes written (pending ones excluded)
        self._base_size = 0      # size after the last load or compaction
        self._records = 0        # read or written since then
        self._read_line = 0      # line of the record `read` gave last
        self._unsynced = False
        self._ready = False      # replay finished
        self._broken = False     # a failed write is not cut off yet
        self._compaction: Compaction | None = None  # under way in the background

    @classmethod
    def open(cls, path: str, read_only: bool = False) -> Journal:
        """Opens a journal and reads its header, and locks it unless
        `read_only`.  Read its records (`read`) before appending: a torn
        last line is dropped (with a warning, and cut off the file unless
        `read_only`) once they have been read."""
        try:
            fd = os.open(path, os.O_RDONLY if read_only else os.O_RDWR | os.O_APPEND)
        except OSError as e:
            raise _error(path, e) from None
        try:
            if not read_only:
                _lock(fd, path)
            # A duplicate descriptor reads the same file that `fd` appends to.
            # Big reads: the default 8 KiB made a 33 MB journal 4000 syscalls.
            reader = _Reader(path, os.fdopen(os.dup(fd), "rb", buffering=MiB))
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, reader, read_only)

    def read(self, after: int = -1) -> Iterator[Record]:
        """The records after position `after`.  The first read replays the
        file as opened; a later one reads it again as it is now (written
        records only, not pending ones)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            records = self._replay(reader)
        else:
            self._check_open()
            try:
                again = _Reader(self.path, open(self.path, "rb", buffering=MiB))
            except OSError as e:
                raise _error(self.path, e) from None
            records = self._read_again(again)
        return records if after < 0 else _after(records, after)

    def where(self, record: Record) -> str:
        return f"{self.path}:{self._read_line}"

    def _replay(self, reader: _Reader) -> Iterator[Record]:
        count = 0
        try:
            for record in reader.records():
                count += 1
                self._read_line = reader.line
                yield record
            end = reader.offset
            problem = reader.problem
            if problem is not None:
                if not reader.torn:
                    raise JournalError(reader.where() + problem)
                end = reader.line_start
                log.warning("%sdropping torn last record (%d bytes): %s",
                            reader.where(), reader.offset - end, problem)
                if not self.read_only:
                    self._cut(end, fsync=True)
        finally:
            reader.close()
        self.last_seq = self._written_seq = reader.last_seq
        self._records = count
        self._size = self._base_size = end
        self._ready = True

    def _read_again(self, reader: _Reader) -> Iterator[Record]:
        try:
            for record in reader.records():
                self._read_line = reader.line
                yield record
            if reader.problem is not None:
                raise JournalError(reader.where() + reader.problem)
        finally:
            reader.close()

    @property
    def size(self) -> int:
        """Bytes in the file, not counting records still pending."""
        return self._size

    @property
    def records_since_compaction(self) -> int:
        """Records read at load or written since, or since the last compaction."""
        return self._records

    def append(self, record: Record) -> None:
        """Adds a record to the pending buffer (no system call).  Its `seq`
        must be greater than the last one."""
        self._check_writable()
        if record.seq <= self.last_seq:
            raise JournalError(f"{self.path}: record seq {record.seq!r} does not follow"
                               f" {self.last_seq}")
        self._pending.append(self._encode(record))
        self.last_seq = record.seq

    def flush(self, sync: bool) -> None:
        """Writes all pending records with one write, then fdatasyncs if
        asked (also when earlier writes were not synced).  On failure the pending
        records are dropped, the file is cut back to its last good record
        and JournalError is raised."""
        self._check_writable()
        if self._pending:
            data = b"".join(self._pending)
            count = len(self._pending)
            self._pending.clear()
            try:
                _write_all(self._fd, data)
                if sync:
                    os.fdatasync(self._fd)
            except OSError as e:
                self.last_seq = self._written_seq
                self._undo()
                raise _error(self.path, e) from None
            self._written_seq = self.last_seq
            if self._compaction is not None:
                self._compaction.tail.append(data)
                self._compaction.tail_records += count
            self._size += len(data)
            self._records += count
            self._unsynced = not sync
        elif sync and self._unsynced:
            try:
                os.fdatasync(self._fd)
            except OSError as e:
                raise _error(self.path, e) from None
            self._unsynced = False

    def should_compact(self, overdue: bool = False, *, min_size: int = 10 * MiB,
                       min_records: int = 100) -> bool:
        """The compaction rule of ovsdb-server (PROTOCOL.md 7.3): at least
        `min_records` records since load or compaction, and the file above
        `min_size` and more than twice its size back then.  The caller owns
        the clock: it asks no sooner than the minimum interval, and passes
        `overdue` once the maximum interval has passed, when any record
        makes compaction worthwhile."""
        if not self._records:
            return False
        if overdue:
            return True
        return (self._records >= min_records and self._size > min_size
                and self._size > 2 * self._base_size)

    def compact(self, header: Header, snapshot: Record) -> None:
        """Replaces the file atomically with `header` and one `snapshot`
        record (every row), then goes on appending to the new file.
        Pending records are written to the old file first."""
        self.flush(sync=False)
        self._cancel_compaction()
        seq = snapshot.seq
        if not snapshot.snapshot or seq < self.last_seq:
            raise JournalError(f"{self.path}: not a snapshot of the current state (seq {seq!r})")
        before = self._size
        data = _line(header.to_json()) + self._encode(snapshot)
        tmp = self.path + ".tmp"
        try:
            mode = os.fstat(self._fd).st_mode & 0o7777
            fd = _create_file(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, mode)
        except OSError as e:
            raise _error(tmp, e) from None
        try:
            # Lock before the rename makes the new file visible.
            _lock(fd, tmp)
            _write_all(fd, data)
            os.fsync(fd)
            os.replace(tmp, self.path)
        except BaseException as e:
            os.close(fd)
            _unlink_quietly(tmp)
            if isinstance(e, OSError):
                raise _error(self.path, e) from None
            raise
        os.close(self._fd)
        self._fd = fd
        self.header = header
        self.last_seq = self._written_seq = seq
        self._size = self._base_size = len(data)
        self._records = 0
        self._unsynced = False
        _fsync_directory(self.path)
        log.info("%s: compacted from %d to %d bytes", self.path, before, self._size)

    def begin_compaction(self, header: Header, snapshot: Record,
                         chunks: Iterator[tuple[str, dict[str, Any]]]) -> Compaction:
        """A compaction to run in the background (see the module's rules):
        `snapshot` is the position, id and date of the snapshot record, and
        `chunks` its rows, as (table, {uuid: row}) with each table's chunks
        together, read by the worker thread.  Nothing may be pending: the
        snapshot holds everything written."""
        self._check_writable()
        if not snapshot.snapshot or snapshot.seq < self.last_seq or self._pending:
            raise JournalError(f"{self.path}: not a snapshot of the current state"
                               f" (seq {snapshot.seq!r})")
        self._cancel_compaction()
        try:
            mode = os.fstat(self._fd).st_mode & 0o7777
        except OSError as e:
            raise _error(self.path, e) from None
        self._compaction = Compaction(self, header, snapshot, chunks, mode)
        return self._compaction

    def _cancel_compaction(self) -> None:
        """A compaction under way no longer matches the file: let it go."""
        if self._compaction is not None:
            self._compaction.cancelled = True
            self._compaction = None

    def close(self) -> None:
        """Writes what is pending (without fsync) and closes the file."""
        if self._fd < 0:
            return
        self._cancel_compaction()
        try:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._ready and not self._broken and not self.read_only:
                self.flush(sync=False)
        finally:
            os.close(self._fd)
            self._fd = -1

    def _encode(self, record: Record) -> bytes:
        try:
            return _line(record.to_json())
        except (TypeError, ValueError, OverflowError) as e:
            raise JournalError(f"{self.path}: cannot serialize record {record.seq!r}: {e}") from None

    def _check_open(self) -> None:
        if self._fd < 0:
            raise JournalError(f"{self.path}: journal is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise JournalError(f"{self.path}: opened read-only")
        if not self._ready:
            raise JournalError(f"{self.path}: records not replayed yet")
        if self._broken:
            # The failed write is still to be cut off: try again (a disk
            # that failed may work now), else refuse to glue lines to it.
            try:
                self._cut(self._size, fsync=False)
            except JournalError as e:
                raise JournalError(f"{e} (cutting off a failed write)") from None
            self._broken = False
            log.info("%s: cut off the failed write; appending again", self.path)

    def _undo(self) -> None:
        """Cuts off whatever part of a failed write reached the file, so the
        next write starts on a clean line.  No fsync: a failing disk may
        refuse it, and a crash before the next fsync can leave failed
        records behind anyway, as any crash during a write can."""
        try:
            self._cut(self._size, fsync=False)
        except JournalError:
            self._broken = True
            log.error("%s: cannot cut off a failed write yet; no write until it is",
                      self.path)

    def _cut(self, size: int, fsync: bool) -> None:
        try:
            os.ftruncate(self._fd, size)
            if fsync:
                os.fsync(self._fd)
        except OSError as e:
            raise _error(self.path, e) from None


# What the worker thread writes at a time while serializing a snapshot.
# Each write releases the GIL, so the loop waits for at most this much
# serialization (~2 ms at 100k rows) to run.
SNAPSHOT_WRITE = 128 * 1024
# Records appended during a compaction that the worker copies after the
# snapshot; the loop copies at most about this much itself, at the switch.
TAIL_IN_LOOP = 64 * 1024


class Compaction:
    """A compaction under way: `write` in a worker thread, then `finish`
    (or `discard`) in the thread that appends to the journal."""

    def __init__(self, journal: Journal, header: Header, snapshot: Record,
                 chunks: Iterator[tuple[str, dict[str, Any]]], mode: int) -> None:
        self.journal = journal
        self.header = header
        self.snapshot = snapshot
        self.tmp = journal.path + ".tmp"
        self.tail: list[bytes] = []  # batches appended to the journal since the snapshot
        self.tail_records = 0
        self.cancelled = False       # the journal was compacted or closed meanwhile
        self._chunks = chunks
        self._mode = mode
        self._fd = -1
        self._copied = 0             # batches of `tail` copied by the worker
        self._snapshot_size = 0      # header and snapshot
        self._size = 0               # bytes in the new file

    def write(self) -> None:
        """Writes the header, the snapshot and most of the tail to
        `<file>.tmp` and fsyncs it (a worker thread's part).  Raises
        JournalError; `discard` then removes what it wrote."""
        try:
            self._fd = _create_file(self.tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
                                    self._mode)
            # Lock before the rename makes the new file visible.
            _lock(self._fd, self.tmp)
            self._write(_line(self.header.to_json()))
            self._write_snapshot()
            self._snapshot_size = self._size
            while not self.cancelled:
                end = len(self.tail)
                rest = sum(len(batch) for batch in self.tail[self._copied:end])
                if rest <= TAIL_IN_LOOP:
                    break
                self._write(b"".join(self.tail[self._copied:end]))
                self._copied = end
            os.fsync(self._fd)
        except OSError as e:
            raise _error(self.tmp, e) from None

    def _write_snapshot(self) -> None:
        """The snapshot record as `_line` would write it, built and sealed
        chunk by chunk (one JSON text for all of it would stall the loop,
        and take as much memory again)."""
        head = _json(self.snapshot.to_json())  # ends with "changes":{}}
        body = [head[:-2]]
        pending = len(body[0])
        crc = 0
        table = None
        for name, rows in self._chunks:
            if self.cancelled:
                return
            text = _json(rows)[1:-1]
            if not text:
                continue
            if name != table:
                opening = b"}," if table is not None else b""
                body.append(opening + _json(name) + b":{")
                table = name
            else:
                body.append(b",")
            body.append(text)
            pending += len(text)
            if pending >= SNAPSHOT_WRITE:
                data = b"".join(body)
                crc = zlib.crc32(data, crc)
                self._write(data)
                body.clear()
                pending = 0
        if table is not None:
            body.append(b"}")
        body.append(b"}")  # closes "changes"
        data = b"".join(body)
        crc = zlib.crc32(data, crc)
        self._write(data + seal_end(crc))

    def _write(self, data: bytes) -> None:
        _write_all(self._fd, data)
        self._size += len(data)

    def finish(self) -> bool:
        """Copies the rest of the tail, syncs the new file and renames it
        over the journal, which appends to it from now on.  False (and
        nothing changed) if the journal was compacted or closed meanwhile;
        JournalError if the switch fails (the old file stays in use)."""
        journal = self.journal
        if self.cancelled or journal._compaction is not self:
            self.discard()
            return False
        try:
            rest = b"".join(self.tail[self._copied:])
            if rest:
                self._write(rest)
            os.fdatasync(self._fd)
            os.replace(self.tmp, journal.path)
        except OSError as e:
            self.discard()
            raise _error(journal.path, e) from None
        journal._compaction = None
        before = journal._size
        os.close(journal._fd)
        journal._fd, self._fd = self._fd, -1
        journal.header = self.header
        journal._size = self._size
        journal._base_size = self._snapshot_size
        journal._records = self.tail_records
        journal._unsynced = False
        log.info("%s: compacted from %d to %d bytes", journal.path, before, journal._size)
        _fsync_directory(journal.path)
        return True

    def discard(self) -> None:
        """Removes the new file (a failed or abandoned compaction)."""
        if self.journal._compaction is self:
            self.journal._compaction = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            _unlink_quietly(self.tmp)


def _after(records: Iterator[Record], after: int) -> Iterator[Record]:
    # A generator, not a generator expression: compiled, that becomes a list.
    for record in records:
        if record.seq > after:
            yield record


class CheckReport(NamedTuple):
    """What `check` found in a journal file."""

    problems: list[str]   # one line each, naming file, line and offset (empty: none)
    unsealed: int         # good records without a checksum (written before checksums)


def check(path: str) -> CheckReport:
    """Reads a whole journal file, going on past damaged lines."""
    try:
        with open(path, "rb") as file:
            reader = _Reader(path, file)
            problems = []
            for lineno, start, _, problem in reader.lines():
                if problem is None:
                    continue
                if reader.torn:
                    problem = (f"torn last record ({reader.offset - start} bytes,"
                               f" repair removes it): {problem}")
                problems.append(_where(path, lineno, start) + problem)
            return CheckReport(problems, reader.unsealed)
    except OSError as e:
        return CheckReport([str(_error(path, e))], 0)
    except JournalError as e:
        return CheckReport([str(e)], 0)


def _create_file(path: str, flags: int, mode: int) -> int:
    """os.open with O_CREAT, then `mode` exactly: open() applies the umask,
    which may ask for less (077) or more (000) than `mode`.  The file is never
    more open than `mode` meanwhile."""
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
    except OSError:
        os.close(fd)
        _unlink_quietly(path)
        raise
    return fd


class Repair(NamedTuple):
    """What `repair` cut off a journal file."""

    line: int       # the first damaged line, cut off with every line after it
    offset: int     # where that line started: the file's new size
    removed: int    # bytes cut off
    backup: str     # the file as it was before


def repair(path: str) -> Repair | None:
    """Copies the file to a backup (`<file>.bak`, or `.bak.2`... if taken),
    then cuts it just before its first damaged line, so that it holds the
    header and the good records before that line.  None if no line is
    damaged (no backup either).  A damaged header cannot be repaired."""
    try:
        with open(path, "r+b") as file:
            _lock(file.fileno(), path)
            reader = _Reader(path, file)
            for lineno, start, _, problem in reader.lines():
                if problem is not None:
                    backup = _back_up(file.fileno(), path)
                    os.ftruncate(file.fileno(), start)
                    os.fsync(file.fileno())
                    return Repair(lineno, start, reader.size - start, backup)
            return None
    except OSError as e:
        raise _error(path, e) from None


def _back_up(fd: int, path: str) -> str:
    """Copies the open file `fd` to a new file next to `path`, with the
    same mode, synced; returns its name."""
    mode = os.fstat(fd).st_mode & 0o777
    for n in range(1, 1000):
        backup = f"{path}.bak" if n == 1 else f"{path}.bak.{n}"
        try:
            out = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue
        try:
            copied = 0
            while chunk := os.pread(fd, MiB, copied):
                _write_all(out, chunk)
                copied += len(chunk)
            os.fsync(out)
        except BaseException:
            os.close(out)
            _unlink_quietly(backup)
            raise
        os.close(out)
        _fsync_directory(backup)
        return backup
    raise JournalError(f"{path}: no free backup name ({path}.bak.2 to .bak.999 all exist)")


class _Reader:
    """Reads a journal line by line, checking each record, for replay,
    `check` and `repair` alike."""

    def __init__(self, path: str, file: IO[bytes]) -> None:
        self.path = path
        self.size = os.fstat(file.fileno()).st_size
        self._file = file
        self.last_seq = -1         # of the last good record
        self.sealed = False        # from now on, every line must be sealed
        self.unsealed = 0          # good records read without a seal
        first = file.readline()
        self.line = 1              # number of the line read last
        self.line_start = 0        # where it starts
        self.offset = len(first)   # where it ends
        self.problem: str | None = None  # what is wrong with it, if `records` stopped there
        self.torn = False          # it is the file's last line, cut short
        try:
            self.header = self._parse_header(first)
        except _BadLine as e:
            file.close()
            raise JournalError(self.where() + str(e)) from None

    def where(self) -> str:
        """The line read last, as an error message starts."""
        return _where(self.path, self.line, self.line_start)

    def records(self) -> Iterator[Record]:
        """The records of the lines that follow, up to the end of the file as
        it was opened or to the first bad line, where they stop with
        `problem` set.  Replay's loop: one generator, no tuple per line."""
        self.problem = None
        size = self.size
        offset = self.offset
        for line in self._file:
            if offset >= size:
                return  # written after the file was opened (read-only)
            self.line += 1
            self.line_start = offset
            offset += len(line)
            self.offset = offset
            try:
                record = self._parse_record(line)  # a direct call when compiled, unlike a bound method's
            except _BadLine as e:
                self.problem = str(e)
                self.torn = offset >= size and not line.endswith(b"\n")
                return
            yield record

    def lines(self) -> Iterator[tuple[int, int, Record | None, str | None]]:
        """(line number, start offset, record or None, problem or None) for
        each line after the header.  A bad line leaves the sequence check
        to the records after it, so `check` can go on."""
        while True:
            for record in self.records():
                yield self.line, self.line_start, record, None
            if self.problem is None:
                return
            yield self.line, self.line_start, None, self.problem

    def close(self) -> None:
        self._file.close()

    def _parse_header(self, line: bytes) -> Header:
        try:
            return Header.from_json(self._parse_line(line))
        except RecordError as e:
            raise _BadLine(str(e)) from None

    def _parse_line(self, line: bytes) -> Any:
        """The JSON object of a line (without its seal), checked against
        its checksum, or against the rule that sealed lines stay sealed."""
        if not line.endswith(b"\n"):
            raise _BadLine("line does not end with a newline")
        text = unseal(line)  # RecordError if its checksum does not match
        try:
            obj = json_loads(line if text is None else text)
        except ValueError as e:
            raise _BadLine(f"not valid JSON ({e})") from None
        if text is not None:
            self.sealed = True
        elif self.sealed:
            raise _BadLine("line has no checksum, but the lines before it have")
        elif self.line > 1:
            self.unsealed += 1
        return obj

    def _parse_record(self, line: bytes) -> Record:
        try:
            record = Record.from_json(self._parse_line(line))
        except RecordError as e:
            raise _BadLine(str(e)) from None
        seq = record.seq
        if seq <= self.last_seq:
            raise _BadLine(f'"seq" {seq} does not follow {self.last_seq}')
        if record.snapshot and self.last_seq >= 0:
            raise _BadLine("snapshot record after the first record")
        self.last_seq = seq
        return record


def _where(path: str, line: int, offset: int) -> str:
    return f"{path}:{line} (offset {offset}): "


def _json(value: Any) -> bytes:
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False).encode()


def _line(value: dict[str, Any]) -> bytes:
    return seal(_json(value))


def _write_all(fd: int, data: bytes) -> None:
    """One write(2) for the whole buffer unless the kernel takes less."""
    written = os.write(fd, data)
    if written < len(data):
        # A view for the rest only now: almost every write takes it all.
        view = memoryview(data)
        while written < len(data):
            written += os.write(fd, view[written:])


def _lock(fd: int, path: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise JournalError(f"{path}: in use by another process") from None
    except OSError as e:
        raise _error(path, e) from None


def _fsync_directory(path: str) -> None:
    """Makes a file's creation or renaming durable."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise _error(path, e) from None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass  # a leftover .tmp file is harmless: the next compaction truncates it


def _error(path: str, e: OSError) -> JournalError:
    return JournalError(f"{path}: {e.strerror or e}")
