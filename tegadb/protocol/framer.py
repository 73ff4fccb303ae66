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
size cap.  A framer made with `large` decodes a message longer than that a
piece at a time, one bounded step per `feed` (see `_Pieces`), so that its
owner can serve others between the steps.
"""

from __future__ import annotations

import math
import re
import sys
from array import array
from itertools import accumulate, pairwise
from typing import Any, Final

import ujson

MAX_DEPTH = 1000
DEFAULT_MAX_SIZE = 64 * 1024 * 1024
# The size of the pieces a large message is decoded in: a step of two took
# 1.7 ms (median, compiled, on a busy machine) for small objects.
PIECE = 32 * 1024


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
_LARGE = object()   # complete, to be decoded a piece at a time

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

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE, fast_paths: bool = True,
                 large: int = 0, piece: int = PIECE) -> None:
        """`fast_paths=False` leaves only the exact scan (step 3): the
        reference the tests hold the fast paths to.  A message longer than
        `large` bytes (0: none) is decoded `piece` bytes at a time, a step
        per `feed` call, `feed(b"")` included, while `decoding` is true."""
        self.max_size = max_size
        self.fast_paths = fast_paths
        # Longest message decoded in one go (step 1 and `_message`).
        self.at_once = min(large, max_size) if large else max_size
        self.piece = piece
        self._large: _Pieces | None = None   # the large message being decoded
        # The large messages decoded, for their owner to free a piece at a time.
        self.leftovers: list[Leftovers] = []
        self.scans = 0           # feeds that went past step 1
        self._buf = bytearray()  # the message in progress, from its first byte
        self._pos = 0            # next byte to scan
        self._depth = 0          # bracket depth at _pos; 0 = between messages
        self._in_string = False  # _pos is inside a string

    @property
    def buffered(self) -> int:
        """Bytes of a message in progress, waiting for the rest (0: none)."""
        return len(self._buf)

    @property
    def decoding(self) -> bool:
        """A large message is being decoded: `feed` (even of no bytes) goes on."""
        return self._large is not None

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
            if self._large is None or self._decode_step(self._large, messages):
                self._scan(messages)
        except ProtocolError as e:
            e.messages = messages
            if self._large is not None:   # the stream is broken: nothing more to decode
                self.leftovers.append(Leftovers(self._large.abandon(), self.piece))
                self._large = None
            raise
        return messages

    def _decode_step(self, large: _Pieces, out: list[Any]) -> bool:
        """One step of the large message at the start of the buffer; True
        once it is decoded (into `out`) and the buffer moved past it."""
        if not large.step():
            return False
        out.append(large.value)
        self._large = None
        self.leftovers.append(Leftovers(large.walked, self.piece))
        del self._buf[:large.end]
        self._pos -= large.end
        return True

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
        if len(data) > self.at_once or (
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
            if value is _LARGE:
                # Decoded by the next calls; what follows waits until then.
                del buf[:start]
                self._pos -= start
                self._large = _Pieces(buf, self._pos, self.piece)
                return
            out.append(value)
        if end - start > self.max_size:
            raise ProtocolError(f"message longer than {self.max_size} bytes")
        del buf[:start]
        self._pos -= start

    def _message(self, start: int, stop: int) -> Any:
        """The message in [start, stop) decoded, or _LARGE if it is to be
        decoded a piece at a time."""
        if stop - start > self.at_once:
            if stop - start > self.max_size:
                raise ProtocolError(f"message longer than {self.max_size} bytes")
            return _LARGE
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


# How `_Pieces` decodes a large message without holding the interpreter for
# long: it walks the containers that are too large to decode at once, and
# hands ujson (`_decode`, with every check of a small message) runs of their
# elements of about `piece` bytes, each as a text of its own: `[` + run + `]`
# or `{` + run + `}`.  A run is found two ways:
# - cheaply, by C-level searches and counts: past `piece` bytes, the first
#   comma at the container's own level ends it.  Without `\"` in the data,
#   quotes alternate between opening and closing strings, so counting quotes
#   and brackets tells the level (as the framer's step 2 does);
# - else exactly, an element at a time, as the framer's step 3 scans: an
#   element that does not end within `piece` bytes is too large for one
#   run, and the walk goes into it (a container) or decodes it alone (a
#   string or a number).
# ujson checks the syntax inside each run; the walk checks what lies between
# runs, and reports an error there as ujson would have, by decoding a small
# text that has the same fault.  The framer checked the nesting depth and
# where the message ends before the walk starts.
_SCALAR = re.compile(rb'[^\s,:\[\]{}"]*')
_COMMA, _COLON = ord(","), ord(":")
# The start of a string's content that holds whole escapes: a surrogate pair
# whole or not at all (a high surrogate alone stops it).
_STRING_PIECE = re.compile(
    rb'(?:[^"\\]+|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[0-9a-fA-F]{4}'
    rb'|\\u(?![dD][89abAB])[0-9a-fA-F]{4}|\\[^u])*')
_CLOSER_OF = {ord("["): ord("]"), ord("{"): ord("}")}
# What a `_Container` expects next: an element or its end, an element, a
# comma or its end.
_FIRST: Final = 0
_VALUE: Final = 1
_SEPARATOR: Final = 2


class _Container:
    """A list or object of a large message being decoded."""

    def __init__(self, opener: int, key: Any, parent: _Container | None, start: int) -> None:
        self.is_object = opener == ord("{")
        self.closer = _CLOSER_OF[opener]
        self.value: Any = {} if self.is_object else []
        self.key = key   # its key in the enclosing object
        self.parent = parent
        self.expect = _FIRST
        self.run_start = -1   # the run of elements walked but not decoded yet
        self.run_end = -1
        self.start = self.end = start   # its text in the message, once closed
        self.held = False   # referenced from outside the message (see Leftovers)


class _LongString:
    """A string of a large message too long for a piece: its content is
    buf[pos:end] (the rest of it), decoded piece by piece into `parts`."""

    def __init__(self, key: Any, pos: int, end: int) -> None:
        self.key, self.pos, self.end = key, pos, end
        self.parts: list[str] = []


class _Pieces:
    """Decodes the message in `buf[:end]` (complete, its depth checked) a
    bounded step at a time."""

    def __init__(self, buf: bytearray, end: int, piece: int) -> None:
        self.buf, self.end, self.piece = buf, end, piece
        self.pos = 1
        self.exact_until = 0   # the cheap way failed: walk exactly up to here
        self.long_string: _LongString | None = None   # being decoded a piece at a time
        self.stack = [_Container(buf[0], None, None, 0)]
        self.walked = self.stack[:]   # every container walked, each after its parent
        self.value: Any = None

    def step(self) -> bool:
        """Decodes about two pieces' worth; True once the whole value is in `value`."""
        buf, end, stack = self.buf, self.end, self.stack
        work = 0
        while work < 2 * self.piece:
            top = stack[-1]
            if self.long_string is not None:
                work += self._string_piece(top)
                continue
            pos = _WHITESPACE.match(buf, self.pos, end).end()  # type: ignore[union-attr]
            char = buf[pos] if pos < end else -1
            if top.expect == _SEPARATOR and char == _COMMA:
                top.expect = _VALUE
                self.pos = pos + 1
            elif char == top.closer and top.expect != _VALUE:
                self._flush(top)
                stack.pop()
                self.pos = top.end = pos + 1
                if not stack:
                    self.value = top.value
                    return True
                self._add(stack[-1], top.key, top.value)
            elif top.expect == _SEPARATOR or char < 0 or char in b"]},:":
                raise self._syntax_error(top, pos)
            else:
                work += self._element(top, pos)
        return False

    def abandon(self) -> list[_Container]:
        """The containers walked, for Leftovers, when the message turned out
        invalid: those still open end where the walk stopped."""
        for container in self.stack:
            container.end = self.pos
        return self.walked

    def _element(self, top: _Container, pos: int) -> int:
        """Walks the run or the element starting at `pos`; returns the
        bytes it took."""
        cut = self._run_cut(pos) if pos >= self.exact_until else -1
        if cut >= 0:
            self._flush(top)
            top.run_start, top.run_end = pos, cut
            self._flush(top)
            self.pos = cut
            top.expect = _SEPARATOR
            return cut - pos
        limit = pos + self.piece
        if pos >= self.exact_until:
            # Walk a piece exactly before trying the cheap way again.
            self.exact_until = limit
        value_at = self._value_start(top, pos)
        stop = self._value_end(value_at, limit) if 0 <= value_at < limit else -1
        if stop >= 0:   # small: it joins the run, or starts the next
            if stop - top.run_start > self.piece:
                self._flush(top)
            if top.run_start < 0:
                top.run_start = pos
            top.run_end = self.pos = stop
            top.expect = _SEPARATOR
            return stop - pos
        self._flush(top)
        if value_at < 0:   # an object's key without a valid `:` after it
            raise self._syntax_error(top, pos)
        key = _decode(self.buf[pos:self._string_end(pos)]) if top.is_object else None
        opener = self.buf[value_at]
        top.expect = _SEPARATOR
        if opener in _OPENERS:
            container = _Container(opener, key, top, value_at)
            self.stack.append(container)
            self.walked.append(container)
            self.pos = value_at + 1
        elif opener == _QUOTE and (stop := self._string_end(value_at)) >= 0:
            self.long_string = _LongString(key, value_at + 1, stop - 1)
            self.pos = stop
        else:   # a number too long for a piece, or no value: ujson says why
            stop = _SCALAR.match(self.buf, value_at, self.end).end()  # type: ignore[union-attr]
            self._add(top, key, _decode(self.buf[value_at:max(stop, value_at + 1)]))
            self.pos = stop
        return self.piece

    def _string_piece(self, top: _Container) -> int:
        """Decodes a piece of the long string under way; its bytes."""
        string, buf = self.long_string, self.buf
        assert string is not None
        start = string.pos
        stop = min(start + self.piece, string.end)
        if stop < string.end:
            # Not inside an escape (nor a surrogate pair), nor a UTF-8 sequence.
            stop = _STRING_PIECE.match(buf, start, stop).end()  # type: ignore[union-attr]
            while stop > start and 0x80 <= buf[stop] < 0xC0:
                stop -= 1
            if stop == start:   # a lone surrogate: the rest at once refuses it
                stop = string.end
        string.parts.append(_decode(b'"' + buf[start:stop] + b'"'))
        string.pos = stop
        if stop == string.end:
            self.long_string = None
            self._add(top, string.key, "".join(string.parts))
        return stop - start

    def _value_start(self, top: _Container, pos: int) -> int:
        """Where the element at `pos` has its value: `pos` in a list, after
        the key and colon in an object (-1: no string and colon there)."""
        if not top.is_object:
            return pos
        key_end = self._string_end(pos) if self.buf[pos] == _QUOTE else -1
        if key_end < 0:
            return -1
        colon = _WHITESPACE.match(self.buf, key_end, self.end).end()  # type: ignore[union-attr]
        if colon >= self.end or self.buf[colon] != _COLON:
            return -1
        return _WHITESPACE.match(self.buf, colon + 1, self.end).end()  # type: ignore[union-attr]

    def _value_end(self, pos: int, limit: int) -> int:
        """Where the value at `pos` ends if before `limit`, else -1."""
        buf = self.buf
        char = buf[pos]
        if char == _QUOTE:
            return self._string_end(pos, limit)
        if char not in _OPENERS:
            stop = _SCALAR.match(buf, pos, limit).end()  # type: ignore[union-attr]
            return stop if stop < limit else -1
        depth = 0
        while True:
            pos = _FILLER.match(buf, pos, limit).end()  # type: ignore[union-attr]
            if pos >= limit or buf[pos] == _QUOTE:   # at the limit, or in a string past it
                return -1
            depth += 1 if buf[pos] in _OPENERS else -1
            pos += 1
            if depth == 0:
                return pos

    def _string_end(self, pos: int, limit: int = -1) -> int:
        """Where the string opening at `pos` ends if before `limit` (-1: the
        message's end), else -1."""
        limit = self.end if limit < 0 else limit
        stop = _STRING_TAIL.match(self.buf, pos + 1, limit).end()  # type: ignore[union-attr]
        return stop + 1 if stop < limit and self.buf[stop] == _QUOTE else -1

    def _run_cut(self, pos: int) -> int:
        """The cheap way to a run: the first comma at the container's own
        level past `piece` bytes from `pos` (an element's start), if there
        is one within a quarter piece more, no `\\"` comes before it and the
        container does not end before it; else -1."""
        buf = self.buf
        at = pos + self.piece
        limit = min(at + self.piece // 4, self.end)
        if at >= limit or buf.find(b'\\"', pos, limit) >= 0:
            return -1
        depth, in_string = _level(buf, pos, at, 0, False)
        while depth >= 0:
            cut = buf.find(b",", at, limit)
            if cut < 0:
                return -1
            depth, in_string = _level(buf, at, cut, depth, in_string)
            if depth == 0 and not in_string:
                return cut
            at = cut + 1
        return -1

    def _flush(self, top: _Container) -> None:
        """Decodes the run walked so far in `top`."""
        if top.run_start < 0:
            return
        run = self.buf[top.run_start:top.run_end]
        if top.is_object:
            top.value.update(_decode(b"{" + run + b"}"))
        else:
            top.value.extend(_decode(b"[" + run + b"]"))
        top.run_start = -1

    def _add(self, top: _Container, key: Any, value: Any) -> None:
        if top.is_object:
            top.value[key] = value
        else:
            top.value.append(value)

    def _syntax_error(self, top: _Container, pos: int) -> ProtocolError:
        """The error ujson gives for the fault at `pos`: that of a small text
        with the same fault (an element before it stands for what came before)."""
        before = b"" if top.expect == _FIRST else b'"k":0' if top.is_object else b"0"
        if top.expect == _VALUE:
            before += b","
        text = (b"{" if top.is_object else b"[") + before + self.buf[pos:min(pos + 64, self.end)]
        try:
            _decode(text)
        except ProtocolError as e:
            return e
        return ProtocolError("syntax error: unexpected end of a large message")


class Leftovers:
    """A large message decoded, to be freed a bounded step at a time once
    its owner is done with it: freed at once, a 60 MiB message took 100 ms.

    Its large containers are emptied, innermost first, a few pieces' worth
    of elements per step; a container referenced from outside the message
    (kept by whoever handled it), and whatever it holds, is left whole.
    """

    def __init__(self, walked: list[_Container], piece: int) -> None:
        self.walked, self.piece = walked, piece
        self.checked = False

    def step(self) -> bool:
        """Frees about two pieces' worth; True once nothing is left."""
        walked = self.walked
        if not self.checked:
            self.checked = True
            # References to a container: its _Container's, its parent's.
            alone = _references(_Container(ord("["), None, None, 0))
            for container in walked:
                parent = container.parent
                container.held = (parent is not None and parent.held) or (
                    _references(container) > alone + (parent is not None))
        while walked:
            container = walked[-1]
            value = container.value
            if container.held or not value:
                walked.pop()
                continue
            # As many elements as two pieces of the text hold, on average.
            count = max(1, 2 * self.piece * len(value) // max(container.end - container.start, 1))
            if type(value) is list:
                del value[-count:]
            else:
                for _ in range(min(count, len(value))):
                    value.popitem()
            return False
        return True


def _references(container: _Container) -> int:
    return sys.getrefcount(container.value)


def _level(buf: bytearray, start: int, stop: int, depth: int, in_string: bool) -> tuple[int, bool]:
    """The bracket depth at `stop` (-1 if it falls below 0 on the way) and
    whether `stop` is in a string, from those at `start`; for data without
    `\\"`."""
    parts = buf[start:stop].split(b'"')
    outside = b"".join(parts[in_string::2])
    steps = array("b", outside.translate(None, _NOT_BRACKETS).translate(_DEPTH_STEP))
    depths = list(accumulate(steps, initial=depth))
    return (-1 if min(depths) < 0 else depths[-1]), in_string ^ (len(parts) % 2 == 0)


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
