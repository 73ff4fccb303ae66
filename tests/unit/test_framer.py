"""Unit tests for tegadb.protocol.framer: bytes in, JSON values out."""

from __future__ import annotations

import random
from typing import Any

import pytest
import ujson

from tegadb.protocol.framer import MAX_DEPTH, Framer, ProtocolError


def feed_all(chunks: list[bytes], framer: Framer | None = None) -> list[Any]:
    framer = framer or Framer()
    out: list[Any] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out


def protocol_error(chunks: list[bytes], framer: Framer | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        feed_all(chunks, framer)
    return info.value

# Messages chosen to trip a scanner: braces and `}{` inside strings, escaped
# quotes and backslashes (also just before a closing quote), multi-byte
# UTF-8, nesting, whitespace inside.
TRICKY = [
    {"id": 0, "method": "list_dbs", "params": []},
    {"id": 1, "method": "echo", "params": ['}{', '"}{"', "\\", "\\\"", "a\\\\\"b", "{[]}"]},
    {"id": "x", "method": "transact", "params": ["DB", {"op": "insert", "row": {"s": "é😀"}}]},
    {"id": [1, {"x": 2}], "method": "m", "params": [[[[[]]]], {"}": {"{": "]["}}]},
    {"id": 2, "method": "m", "params": ["} {", "}\n{", "ends with backslash\\"]},
]


def dumps(value: Any, **kwargs: Any) -> bytes:
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False,
                       **kwargs).encode()


@pytest.mark.parametrize("message", TRICKY)
@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_split_at_every_byte(message: Any, ensure_ascii: bool) -> None:
    text = ujson.dumps(message, ensure_ascii=ensure_ascii).encode()
    for i in range(len(text) + 1):
        assert feed_all([text[:i], text[i:]]) == [message], i


@pytest.mark.parametrize("message", TRICKY[:2])
def test_split_at_every_pair_of_bytes(message: Any) -> None:
    text = dumps(message)
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            assert feed_all([text[:i], text[i:j], text[j:]]) == [message], (i, j)


@pytest.mark.parametrize("separator", [b"", b"\n", b" ", b"\r\n", b"\t \n"])
def test_many_messages_per_chunk(separator: bytes) -> None:
    stream = separator.join(dumps(m) for m in TRICKY * 3) + separator
    assert feed_all([stream]) == TRICKY * 3


def test_byte_at_a_time() -> None:
    stream = b" ".join(dumps(m) for m in TRICKY)
    framer = Framer()
    assert feed_all([stream[i:i + 1] for i in range(len(stream))], framer) == TRICKY
    assert framer.feed(b"") == []


# Bits of string content that confuse a scanner.
ATOMS = ['}{', '"', '\\', '\\"', '{', '}', '[', ']', 'é', '😀', '}\n{', '} {', 'x', ' ', '\\\\']


def random_value(rnd: random.Random, depth: int = 1) -> Any:
    r = rnd.random()
    if depth > 4 or r < 0.3:
        return rnd.choice([1, -2.5, True, None, 10**20,
                           "".join(rnd.choices(ATOMS, k=rnd.randint(0, 5)))])
    if r < 0.65:
        return [random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    return {rnd.choice(ATOMS): random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}


def random_chunks(rnd: random.Random, stream: bytes) -> list[bytes]:
    cuts = sorted(rnd.sample(range(len(stream) + 1), rnd.randint(0, 6)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]


def test_random_streams_and_chunkings() -> None:
    """Whatever the chunking and separators, the framer yields exactly the
    messages that were serialized."""
    rnd = random.Random(7047)
    for _ in range(1500):
        messages = [{"id": rnd.randint(0, 9), "params": [random_value(rnd)]}
                    for _ in range(rnd.randint(1, 5))]
        stream = b"".join(ujson.dumps(m, ensure_ascii=rnd.random() < 0.3).encode()
                          + rnd.choice([b"", b"", b"\n", b" ", b"\r\n"]) for m in messages)
        chunks = random_chunks(rnd, stream)
        assert feed_all(chunks) == messages, chunks


def test_fast_paths_agree_with_the_exact_scanner() -> None:
    """On valid and broken streams alike, chunked at random: same messages,
    same error or none, same state left for the next feed."""
    rnd = random.Random(6640)
    junk = [b"]", b"}", b"[", b'"', b"\\", b"1", b"[1]", b'{"a":', b",", b'\\"']

    def run(framer: Framer, chunks: list[bytes]) -> tuple[Any, ...]:
        out: list[Any] = []
        try:
            for chunk in chunks:
                out += framer.feed(chunk)
        except ProtocolError as e:
            return out + e.messages, "error"
        return out, bytes(framer._buf), framer._depth, framer._in_string

    for _ in range(3000):
        parts = []
        for _ in range(rnd.randint(1, 4)):
            parts += [dumps({"m": random_value(rnd)}), rnd.choice([b"", b"", b" ", b"\n"])]
            if rnd.random() < 0.1:
                parts.append(rnd.choice(junk))
        chunks = random_chunks(rnd, b"".join(parts))
        cap = rnd.choice([30, 60, 10**6])
        assert run(Framer(cap), chunks) == run(Framer(cap, fast_paths=False), chunks), (chunks, cap)


def test_one_message_per_chunk_takes_the_fast_path() -> None:
    framer = Framer()
    for message in TRICKY:
        assert framer.feed(dumps(message) + b"\n") == [message]
    assert framer.scans == 0


@pytest.mark.parametrize("separator", [b"", b"\n", b" \r\n"])
def test_whole_messages_per_chunk_take_the_fast_path(separator: bytes) -> None:
    # `}{` inside strings must not split a message; without `\"` quotes tell.
    messages = [m for m in TRICKY if b'\\"' not in dumps(m)] * 2
    messages.append({"id": 3, "method": "echo", "params": ["}{", "} {", "}\n{"]})
    framer = Framer()
    assert framer.feed(separator.join(dumps(m) for m in messages)) == messages
    assert framer.scans == 0


def test_a_chunk_ending_inside_a_message_is_kept() -> None:
    first, second = dumps(TRICKY[0]), dumps(TRICKY[3])
    framer = Framer()
    cut = second.index(b"}") + 1  # the chunk ends at a "}" inside the second message
    assert framer.feed(first + second[:cut]) == [TRICKY[0]]
    assert framer.feed(second[cut:]) == [TRICKY[3]]


def test_incomplete_message_is_kept() -> None:
    framer = Framer()
    assert framer.feed(b'{"id":1,"method":"echo","params":["}{') == []
    assert framer.feed(b'"]}{"id"') == [{"id": 1, "method": "echo", "params": ["}{"]}]
    assert framer.feed(b':2,"result":[]}') == [{"id": 2, "result": []}]


def test_integers_outside_int64_are_returned() -> None:
    assert feed_all([b'{"a":[18446744073709551616,-9223372036854775809]}']) == [
        {"a": [18446744073709551616, -9223372036854775809]}]


@pytest.mark.parametrize("chunks", [
    [b'"hello"'], [b"12"], [b"true"], [b"null"], [b"x"],
    [b'{"id":1,"result":[]} 5'], [b'{"id":1,"result":[]}', b"nope"],
    [b"\xef\xbb\xbf{}"],  # a byte order mark is not JSON whitespace
])
def test_top_level_value_must_be_object_or_array(chunks: list[bytes]) -> None:
    assert "a message must be a JSON object or array" in protocol_error(chunks).reason


@pytest.mark.parametrize("chunks", [
    [b'{"a":}'], [b'{"a":1,}'], [b'{"a" 1}'], [b'{"a":"\\x"}'], [b'{"a":1]'],
    [b'{"a":[1,2}]}'], [b'{"a":1}{"b":'], [b'{"a":1}{"b":2,}'],
])
def test_invalid_json_is_a_protocol_error(chunks: list[bytes]) -> None:
    framer = Framer()
    try:
        feed_all(chunks, framer)
    except ProtocolError as e:
        assert e.reason
    else:  # an incomplete prefix may simply wait for more bytes ...
        assert framer._buf  # ... which is only legitimate if it kept them
        protocol_error([b"}" * 5], framer)


@pytest.mark.parametrize("text", [
    b'{"a":"\\u0000"}', b'{"a":"x\\\\\\u0000"}', b'{"\\u0000":1}',
    b'{"a":"\\\\"} {"b":"\\u0000"}',
])
def test_null_bytes_are_rejected(text: bytes) -> None:
    for chunks in ([text], [text[:5], text[5:]]):
        assert protocol_error(chunks).reason == "null bytes not supported in quoted strings"


def test_escaped_backslash_before_u0000_is_plain_text() -> None:
    assert feed_all([b'{"a":"\\\\u0000"}']) == [{"a": "\\u0000"}]


@pytest.mark.parametrize("text", [
    b'{"a":"\xff"}', b'{"a":"\xc3"}', b'{"a":"\xc0\x80"}', b'{"a":"\xed\xa0\x80"}',
    b'{"a":"\\ud800"}', b'{"a":"\\udc00\\ud800"}', b'{"\\uDBFF":1}', b'{"a":1}\xff',
])
def test_invalid_unicode_is_rejected(text: bytes) -> None:
    for chunks in ([text], [text[:4], text[4:]]):
        protocol_error(chunks)


def test_valid_unicode_is_accepted_even_when_split_inside_a_character() -> None:
    text = '{"a":"é😀\\ud83d\\ude00"}'.encode()
    for i in range(len(text) + 1):
        assert feed_all([text[:i], text[i:]]) == [{"a": "é😀😀"}]


def nested(depth: int) -> bytes:
    return b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("layout", ["whole", "split", "after another", "byte by byte"])
def test_nesting_depth_limit(layout: str) -> None:
    def chunks(text: bytes) -> list[bytes]:
        if layout == "whole":
            return [text]
        if layout == "split":
            return [text[:700], text[700:]]
        if layout == "after another":
            return [b'{"x":1}' + text + b'{"y":2}']
        return [text[i:i + 1] for i in range(len(text))]

    ok = nested(MAX_DEPTH)
    value = feed_all(chunks(ok))[-2 if layout == "after another" else -1]
    assert dumps(value) == ok  # (== would recurse deeper than Python allows)
    error = protocol_error(chunks(nested(MAX_DEPTH + 1)))
    assert error.reason == "input exceeds maximum nesting depth 1000"


def test_size_cap_on_incomplete_message() -> None:
    framer = Framer(max_size=100)
    framer.feed(b'{"a":"' + b"x" * 90)
    error = protocol_error([b"x" * 10], framer)
    assert error.reason == "message longer than 100 bytes"


def test_size_cap_on_complete_message() -> None:
    text = b'{"a":"' + b"x" * 200 + b'"}'
    assert protocol_error([text], Framer(max_size=100)).reason == "message longer than 100 bytes"
    assert protocol_error([text[:50], text[50:]], Framer(max_size=100)).reason \
        == "message longer than 100 bytes"
    assert feed_all([text], Framer(max_size=len(text))) == [{"a": "x" * 200}]


def test_whitespace_between_messages_is_not_kept() -> None:
    framer = Framer(max_size=10)
    for _ in range(5):
        assert framer.feed(b" \n\t\r" * 10) == []
    assert framer.feed(b"{}") == [{}]


def test_messages_before_an_error_are_reported() -> None:
    error = protocol_error([b'{"id":1,"result":[]}{"id":2,"result":[]}"junk"'])
    assert error.messages == [{"id": 1, "result": []}, {"id": 2, "result": []}]


# What ujson reads as NaN, an infinity, or an integer beyond a double, and
# ovsdb-server rejects ("invalid character", "number outside valid range").
NOT_JSON_NUMBERS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1E+400", b"0.1e310",
                    b"1" + b"0" * 400, b"-1" + b"0" * 400, b"1" + b"0" * 400 + b".5"]


@pytest.mark.parametrize("number", NOT_JSON_NUMBERS)
@pytest.mark.parametrize("fast_paths", [True, False])
def test_numbers_that_are_not_finite_doubles_are_syntax_errors(number: bytes,
                                                              fast_paths: bool) -> None:
    before = b'{"id":1,"method":"echo","params":[1.5]}'
    text = b'{"id":2,"method":"echo","params":[{"deep":[%s]}]}' % number
    for chunks in ([before + text], [before, text], [before + text[:20], text[20:]]):
        error = protocol_error(chunks, Framer(fast_paths=fast_paths))
        assert error.reason.startswith("syntax error: ")
        assert ("NaN" if number == b"NaN" else "number outside valid range") in error.reason
        assert error.messages == ([{"id": 1, "method": "echo", "params": [1.5]}]
                                  if len(chunks) != 2 else [])


@pytest.mark.parametrize("text, value", [
    (b"1e-400", 0.0), (b"1e308", 1e308), (b"-1.7976931348623157e308", -1.7976931348623157e308),
    (b"1" + b"0" * 308, 10**308),
    # Beyond DBL_MAX, but rounds to it rather than to infinity.
    (b"179769313486231580793" + b"0" * 288, 179769313486231580793 * 10**288),
])
def test_numbers_a_double_holds_are_accepted(text: bytes, value: float) -> None:
    assert feed_all([b'{"a":[%s]}' % text]) == [{"a": [value]}]


@pytest.mark.parametrize("depth", [1, 99, 100, 101, MAX_DEPTH - 2])
def test_non_finite_numbers_are_found_at_any_depth(depth: int) -> None:
    text = b"[" * depth + b'"s",{"k":[1,NaN]}' + b"]" * depth
    assert "NaN" in protocol_error([text]).reason
    assert feed_all([text.replace(b"NaN", b"2.5")])  # the same, finite, is fine
