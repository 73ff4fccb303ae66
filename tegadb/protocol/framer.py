"""OVSDB stream framing: bytes in, parsed JSON values out.

Sans-IO, like h11: the connection owner feeds received bytes to a `Framer`
and gets parsed JSON values back, or a `ProtocolError` naming what was wrong.
Nothing here touches a socket or an event loop; what the values mean as
JSON-RPC messages is `messages`'s business.

Rules this module enforces (PROTOCOL.md section 1.2): the stream is
concatenated JSON texts with no delimiter; each top-level value starts with
`{` or `[`; at most 1000 levels of nesting; strings are valid UTF-8 without
`\\u0000` or unpaired surrogates; numbers are finite doubles or integers
that a double holds (`NaN`, `Infinity` and `1e400`, which ujson accepts, are
syntax errors, as for ovsdb-server); an incomplete message is kept up to a
size cap.
"""

from __future__ import annotations

import math
import re
from array import array
from itertools import accumulate, pairwise
from typing import Any, Final

import ujson

MAX_DEPTH = 1000
DEFAULT_MAX_SIZE = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The peer broke the protocol; the connection must be closed.

    `messages` holds the values completed in the same `feed` call before the
    error, so a caller may still process them first, as ovsdb-server would.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.messages: list[Any] = []


# How the framer finds where each message ends, cheapest way first:
# 1. A chunk that arrives on an empty buffer and splits at its `}{` pairs
#    outside strings into values that each parse whole is that many messages
#    (the common case: one or a few requests per read).
# 2. `_fast_forward` uses only C-level searches, counts and translations.  It
#    works on data without an escaped quote (`\"`): there quotes alternate
#    between opening and closing strings, so counting quotes tells what lies
#    outside strings without walking the bytes.  Outside strings, a `}`
#    followed (after whitespace) by `{` can only sit between two top-level
#    values, so the first such pair outside a string ends the message.  An
#    incomplete message is skipped by counting its brackets.
# 3. `_scan_exactly` walks the structure, one Python step per bracket (the
#    regexes skip everything else).  It is exact for any input: escaped
#    quotes, a backslash at the end of the data, top-level values not
#    separated by `}{`, invalid JSON.  It runs whenever step 2 declines.
# Both steps keep the same state for the message in progress (scan
# position, bracket depth, inside a string), so either can take over at any
# point.  The work stays linear however the input is chunked or crafted:
# step 3 reads each byte once, and step 2's searches resume where they
# stopped, while its attempts that read ahead to a boundary or to the end of
# the data are not repeated for the same spot (see `_Lookahead`).
_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_BOUNDARY = re.compile(rb"\}[ \t\r\n]*\{")
_ESCAPED_QUOTE = re.compile(rb'\\"')
# The rest of a string after its opening quote, up to (not including) the
# closing quote.  It stops before a backslash that ends the buffer, so the
# escape is read again, whole, when more data arrives.
_STRING_TAIL = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
# Anything but brackets, including complete strings.  It stops at a bracket,
# at the quote opening a string that is not complete yet, or at the end.
# Both regexes match something at any position and nothing follows their
# loops, so they backtrack only inside a string that turns out incomplete,
# once, over that string.  (Not possessive quantifiers: CPython before
# 3.11.5, such as Debian 12's 3.11.2, lets this one match an incomplete
# string through them.)
_FILLER = re.compile(rb'(?:[^"{}\[\]]+|"[^"\\]*(?:\\.[^"\\]*)*")*', re.DOTALL)
_OPENERS = b"{["
_QUOTE = ord('"')
_BACKSLASH = ord("\\")
# The last byte of a chunk that may hold exactly one complete value.
_CAN_END_VALUE = b"}] \t\r\n"
# translate() tables: keep only brackets, then map them to +1 / -1 (as
# signed bytes) so that itertools.accumulate yields the depth after each.
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"{}[]")
_DEPTH_STEP = bytes(1 if c in b"{[" else 255 if c in b"}]" else 0 for c in range(256))
# Results of _fast_forward besides a message.
_DECLINED = object()
_INCOMPLETE = object()

# ovsdb-server's words for a number a double cannot hold.
_NOT_FINITE = "syntax error: number outside valid range (Infinity, or beyond a double)"
_NAN = "syntax error: NaN is not a JSON number"
# Integers up to this need no check; a small int for mypyc, so comparing
# with it costs no Python call (2**63 would).
_EXACT_IN_DOUBLE: Final = 2**53
_RECURSION_LIMIT: Final = 100

# A `\u` escape with the whole run of backslashes before it: the escape is
# real when the run has odd length.  Only NUL and surrogates matter here.
# (The lookbehind keeps a long run from being rescanned from each byte.)
_U_ESCAPE = re.compile(rb"(?<!\\)(\\+)u(0000|[dD][89abcdefABCDEF])")
# UTF-8 encoding of a surrogate code point (CESU-8), which ujson lets through.
_RAW_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")


class _Finder:
    """Where `pattern` next matches at or after a position, for positions
    that only grow during one scan, so each byte is searched once however
    many messages the data holds."""

    def __init__(self, pattern: re.Pattern[bytes], buf: bytes | bytearray) -> None:
        self.pattern, self.buf = pattern, buf
        self.at = -2  # start of the last match found; -1: none up to the end

    def next(self, pos: int) -> int:
        if self.at != -1 and self.at < pos:
            match = self.pattern.search(self.buf, pos)
            self.at = match.start() if match else -1
        return self.at


class _Lookahead:
    """What step 2 has learnt about the data ahead during one scan."""

    def __init__(self, buf: bytes | bytearray) -> None:
        self.buf = buf
        self.escapes = _Finder(_ESCAPED_QUOTE, buf)
        self._pairs = _Finder(_BOUNDARY, buf)
        # Quotes are counted up to `_counted`, where `_in_string` holds.
        self._counted = 0
        self._in_string = False
        # Each attempt below is made at most once per scan, as it costs time
        # in proportion to the rest of the data; after a failure the exact
        # scan reads the messages up to that point.
        self.failed_cut = -1       # where a message did not parse
        self.tail_counted = False  # brackets up to the end were counted

    def boundary(self, pos: int, in_string: bool, limit: int) -> int:
        """Where a message ends if a `}`-whitespace-`{` outside strings in
        [pos, limit) ends it, else -1; `in_string` is the state at `pos`.
        The bytes must hold no `\\"`: then whether a pair lies in a string
        does not depend on where counting starts, so no quote is counted
        twice however many messages ask."""
        if self._counted > pos:
            pos, in_string = self._counted, self._in_string
        while True:
            hit = self._pairs.next(pos)
            if hit < 0 or hit >= limit:
                return -1
            in_string ^= self.buf.count(b'"', pos, hit) % 2 == 1
            self._counted, self._in_string = hit, in_string
            if not in_string:
                return hit + 1
            pos = hit + 1


class Framer:
    """Splits a byte stream into JSON values.

    Linear in the input however it is chunked: the scan state of the message
    in progress (position, depth, inside a string) survives between `feed`
    calls.  An incomplete message is kept up to `max_size` bytes.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE, fast_paths: bool = True) -> None:
        """`fast_paths=False` leaves only the exact scan (step 3): the
        reference the tests hold the fast paths to."""
        self.max_size = max_size
        self.fast_paths = fast_paths
        self.scans = 0           # feeds that went past step 1
        self._buf = bytearray()  # the message in progress, from its first byte
        self._pos = 0            # next byte to scan
        self._depth = 0          # bracket depth at _pos; 0 = between messages
        self._in_string = False  # _pos is inside a string

    @property
    def buffered(self) -> int:
        """Bytes of a message in progress, waiting for the rest (0: none)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Any]:
        """Adds received bytes; returns every JSON value completed by them."""
        if not self._buf and data and data[-1] in _CAN_END_VALUE and self.fast_paths:
            values = self._whole_messages(data)
            if values is not None:
                return values
        self.scans += 1
        self._buf += data
        messages: list[Any] = []
        try:
            self._scan(messages)
        except ProtocolError as e:
            e.messages = messages
            raise
        return messages

    def _whole_messages(self, data: bytes) -> list[Any] | None:
        """Step 1 above: the chunk as whole messages joined by `}{` (one or
        more requests per read), or None when it is anything else.  Without
        `\\"` in the chunk, a pair after an even number of quotes lies
        outside strings.  The last message is parsed first: a chunk that
        ends inside a message fails there before any other work."""
        # The backslash byte first: `bytes in bytes` tries the needle as an
        # integer before searching, raising and clearing a TypeError each time.
        if (_BACKSLASH in data and b'\\"' in data) or _BOUNDARY.search(data) is None:
            value = self._whole(data)
            return None if value is None else [value]
        ahead, end = _Lookahead(data), len(data)
        cuts = [0]
        while (cut := ahead.boundary(cuts[-1], False, end)) >= 0:
            cuts.append(cut)
        last = self._whole(data[cuts[-1]:])
        if last is None:
            return None
        values = []
        for start, stop in pairwise(cuts):
            value = self._whole(data[start:stop])
            if value is None:
                return None
            values.append(value)
        values.append(last)
        return values

    def _whole(self, data: bytes) -> Any:
        """The chunk parsed as exactly one message, or None if it is not
        one, or is invalid (the scanner then says why), or might nest too
        deep (depth is at most the number of opening brackets, which is at
        most half the length, so count them only when needed)."""
        if len(data) > self.max_size or (
                len(data) > 2 * MAX_DEPTH
                and data.count(b"{") + data.count(b"[") > MAX_DEPTH):
            return None
        try:
            value = _decode(data)
        except ProtocolError:
            return None
        return value if isinstance(value, (dict, list)) else None

    def _scan(self, out: list[Any]) -> None:
        buf = self._buf
        end = len(buf)
        start = 0
        ahead = _Lookahead(buf)
        while True:
            if self._depth == 0:
                pos = _WHITESPACE.match(buf, self._pos).end()  # type: ignore[union-attr]
                if pos == end:
                    start = end
                    break
                if buf[pos] not in _OPENERS:
                    raise ProtocolError("syntax error: a message must be a JSON object or array")
                start = self._pos = pos
            value = self._fast_forward(start, end, ahead)
            if value is _DECLINED:
                if not self._scan_exactly(end):
                    break
                value = self._message(start, self._pos)
            elif value is _INCOMPLETE:
                break
            out.append(value)
        if end - start > self.max_size:
            raise ProtocolError(f"message longer than {self.max_size} bytes")
        del buf[:start]
        self._pos -= start

    def _message(self, start: int, stop: int) -> Any:
        if stop - start > self.max_size:
            raise ProtocolError(f"message longer than {self.max_size} bytes")
        return _decode(self._buf[start:stop])

    def _fast_forward(self, start: int, end: int, ahead: _Lookahead) -> Any:
        """Step 2 above: the message from `start` if it ends in the data,
        else _INCOMPLETE (all data consumed) or _DECLINED (state untouched:
        this data needs `_scan_exactly`)."""
        if not self.fast_paths:
            return _DECLINED
        pos = self._pos
        escape = ahead.escapes.next(pos)
        cut = ahead.boundary(pos, self._in_string, end if escape < 0 else escape)
        if cut >= 0:
            value = _DECLINED if cut == ahead.failed_cut else self._complete(start, cut)
            if value is _DECLINED:
                ahead.failed_cut = cut
            return value
        if escape >= 0 or ahead.tail_counted or self._buf[end - 1] == _BACKSLASH:
            return _DECLINED
        ahead.tail_counted = True
        depths, in_string = self._depths(pos, end)
        # The message must not end before the last bracket (only the exact
        # scan finds where), nor nest too deep (the exact scan reports it).
        if min(depths[1:-1], default=1) <= 0 or depths[-1] < 0 or max(depths) > MAX_DEPTH:
            return _DECLINED
        if depths[-1]:
            self._pos, self._depth, self._in_string = end, depths[-1], in_string
            return _INCOMPLETE
        if in_string:
            return _DECLINED  # a string after the end of the message
        return self._complete(start, end, depth_checked=True)

    def _complete(self, start: int, stop: int, depth_checked: bool = False) -> Any:
        """The message in [start, stop) found by step 2, or _DECLINED if it
        does not parse (the exact scan then finds the real end or error) or
        nests too deep.  A valid message entered at depth d cannot nest
        deeper than (length + d) / 2: measure only when that bound fails,
        and only once the text has parsed, so no byte is measured twice."""
        try:
            value = self._message(start, stop)
        except ProtocolError:
            return _DECLINED
        if (not depth_checked
                and (stop - self._pos + self._depth) // 2 > MAX_DEPTH
                and max(self._depths(self._pos, stop)[0]) > MAX_DEPTH):
            return _DECLINED
        self._pos, self._depth, self._in_string = stop, 0, False
        return value

    def _depths(self, pos: int, stop: int) -> tuple[list[int], bool]:
        """The depth before and after each bracket outside strings in
        [pos, stop), and whether `stop` is inside a string.  The bytes must
        hold no `\\"`."""
        parts = self._buf[pos:stop].split(b'"')
        outside = b"".join(parts[self._in_string::2])
        steps = array("b", outside.translate(None, _NOT_BRACKETS).translate(_DEPTH_STEP))
        depths = list(accumulate(steps, initial=self._depth))
        return depths, self._in_string ^ (len(parts) % 2 == 0)

    def _scan_exactly(self, end: int) -> bool:
        """Step 3 above: advances to the end of the message (True) or of the
        data (False)."""
        buf = self._buf
        pos, depth, in_string = self._pos, self._depth, self._in_string
        complete = False
        while True:
            if in_string:
                pos = _STRING_TAIL.match(buf, pos).end()  # type: ignore[union-attr]
                if pos == end or buf[pos] == _BACKSLASH:
                    break
                pos += 1
                in_string = False
            pos = _FILLER.match(buf, pos).end()  # type: ignore[union-attr]
            if pos == end:
                break
            char = buf[pos]
            pos += 1
            if char == _QUOTE:
                in_string = True
            elif char in _OPENERS:
                depth += 1
                if depth > MAX_DEPTH:
                    raise ProtocolError(f"input exceeds maximum nesting depth {MAX_DEPTH}")
            else:
                depth -= 1
                if depth == 0:
                    complete = True
                    break
        self._pos, self._depth, self._in_string = pos, depth, in_string
        return complete


def _decode(text: bytes | bytearray) -> Any:
    """Parses one complete JSON text found by the scanner."""
    try:
        value = ujson.loads(text)
    except ValueError as e:
        raise ProtocolError(f"syntax error: {e}") from None
    # Both checks below are C-speed; most messages need nothing more.
    if _BACKSLASH in text or not text.isascii():
        _check_strings(text, value)
    _check_numbers(value)
    return value


def _check_numbers(value: Any, depth: int = 0) -> None:
    """Rejects the numbers ujson accepts but JSON (RFC 8259) and OVS do not:
    `NaN`, `Infinity`, `-Infinity`, and numbers beyond a double's range,
    which ujson reads as infinite floats or as Python integers (OVS reads an
    integer outside int64 as a double, and fails if it overflows).
    Recursive, which is the fast way compiled; strings, most of a message,
    are skipped before the call."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProtocolError(_NOT_FINITE if value == value else _NAN)
    elif isinstance(value, int):
        if value > _EXACT_IN_DOUBLE or value < -_EXACT_IN_DOUBLE:  # rare: try
            try:
                float(value)
            except OverflowError:
                raise ProtocolError(_NOT_FINITE) from None
    elif depth == _RECURSION_LIMIT:
        # Values nest up to MAX_DEPTH, as deep as Python's own recursion
        # limit: from here on, an explicit stack.
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
            else:
                _check_numbers(item)
    elif isinstance(value, dict):
        for item in value.values():
            if not isinstance(item, str):
                _check_numbers(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                _check_numbers(item, depth + 1)


def _check_strings(text: bytes | bytearray, value: Any) -> None:
    """Rejects what ujson accepts but OVSDB does not: `\\u0000`, and
    surrogates that do not form a pair (they could not be encoded back).
    Callers skip it for ASCII text without a backslash: it holds neither."""
    if _RAW_SURROGATE.search(text):
        raise ProtocolError("invalid UTF-8 in string (encoded surrogate)")
    surrogate_escapes = False
    for m in _U_ESCAPE.finditer(text):
        if len(m[1]) % 2 == 0:
            continue  # an escaped backslash followed by plain "u..."
        if m[2] == b"0000":
            raise ProtocolError("null bytes not supported in quoted strings")
        surrogate_escapes = True
    if surrogate_escapes:
        # ujson joins valid pairs into one character; anything left over is
        # a lone surrogate, which UTF-8 cannot encode.
        try:
            ujson.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ProtocolError("invalid UTF-16 surrogate pair in string") from None
