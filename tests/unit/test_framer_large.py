"""Large messages decoded a piece at a time (tegadb.protocol.framer, `large`):
the same values and the same errors as decoding at once, in bounded pieces."""

from __future__ import annotations

import random
from typing import Any

import pytest
import ujson

from tegadb.protocol import framer as framer_module
from tegadb.protocol.framer import MAX_DEPTH, Framer, ProtocolError


def decode(stream: bytes, piece: int = 16, large: int = 32, chunk: int = 7) -> list[Any]:
    """Every value in `stream`, fed `chunk` bytes at a time, each large
    message's decoding driven to its end with empty feeds."""
    framer = Framer(large=large, piece=piece)
    out: list[Any] = []
    for i in range(0, len(stream), chunk):
        out += framer.feed(stream[i:i + chunk])
        while framer.decoding:
            out += framer.feed(b"")
    assert not framer.buffered
    return out


def error_at_once(text: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        Framer().feed(text)
    return info.value.reason


def error_in_pieces(text: bytes, piece: int = 16) -> str:
    framer = Framer(large=32, piece=piece)
    with pytest.raises(ProtocolError) as info:
        framer.feed(text)
        while framer.decoding:
            framer.feed(b"")
    assert not framer.decoding   # the owner is not asked to go on
    return info.value.reason


# String content that confuses a walker: brackets, separators, escapes.
ATOMS = ["}{", "[]", ",", ":", '"', "\\", '\\"', "é", "😀", "", "x" * 70]


def random_value(rnd: random.Random, depth: int = 0) -> Any:
    r = rnd.random()
    if depth > 4 or r < 0.35:
        return rnd.choice([1, -2.5, True, False, None, 10**15, rnd.choice(ATOMS)])
    if r < 0.7:
        return [random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 12))]
    return {rnd.choice(ATOMS) + str(i): random_value(rnd, depth + 1)
            for i in range(rnd.randint(0, 12))}


@pytest.mark.parametrize("seed", range(6))
def test_same_values_as_decoding_at_once(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(15):
        value = [random_value(rnd) for _ in range(rnd.randint(1, 5))]
        text = ujson.dumps(value, ensure_ascii=rnd.random() < 0.5,
                           indent=rnd.choice([0, 0, 2])).encode()
        small = b'{"id":1}'
        assert decode(small + text + small + text, piece=rnd.choice([4, 16, 64])) == [
            {"id": 1}, value, {"id": 1}, value]


def test_a_large_message_is_decoded_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The work is spread over many feeds, and no text handed to ujson is
    much longer than a piece (seen only interpreted: compiled code calls
    `_decode` directly)."""
    interpreted = framer_module.__file__.endswith(".py")
    decoded: list[int] = []
    real_decode = framer_module._decode

    def recording(text: bytes | bytearray) -> Any:
        decoded.append(len(text))
        return real_decode(text)

    monkeypatch.setattr(framer_module, "_decode", recording)
    rows = [{"op": "insert", "table": "T", "row": {"name": f"r{i}", "tags": ["set", ["a", "b"]]}}
            for i in range(20_000)]
    nested = {"big": [[f"s{i}" for i in range(20_000)], {"k": list(range(20_000))}]}
    for value in (rows, nested):
        text = ujson.dumps({"method": "transact", "params": value, "id": 1}).encode()
        framer = Framer(large=64 * 1024, piece=8 * 1024)
        assert framer.feed(text) == []
        assert framer.decoding
        feeds = 1
        out: list[Any] = []
        while not out:
            out = framer.feed(b"")
            feeds += 1
        assert out == [{"method": "transact", "params": value, "id": 1}]
        if interpreted:
            assert max(decoded) <= 8 * 1024 * 5 // 4 + 200, max(decoded)
        assert feeds >= len(text) // (4 * 8 * 1024), (feeds, len(text))
        decoded.clear()


def test_messages_keep_their_order_around_a_large_one() -> None:
    big = ujson.dumps({"id": "big", "params": list(range(20_000))}).encode()
    stream = b'{"id":1}' + big + b'{"id":2}{"id":3}'
    framer = Framer(large=1024, piece=512)
    first = framer.feed(stream)
    assert first == [{"id": 1}] and framer.decoding
    rest: list[Any] = []
    while framer.decoding:
        assert not rest   # nothing after the large message comes before it
        rest += framer.feed(b"")
    assert rest == [{"id": "big", "params": list(range(20_000))}, {"id": 2}, {"id": 3}]


def test_bytes_received_while_decoding_wait_their_turn() -> None:
    big = ujson.dumps([list(range(3000))]).encode()
    framer = Framer(large=1024, piece=256)
    assert framer.feed(big) == []
    assert framer.feed(b'{"id":2}') == []   # one step further, nothing new yet
    out: list[Any] = []
    while framer.decoding:
        out += framer.feed(b"")
    out += framer.feed(b"")
    assert out == [[list(range(3000))], {"id": 2}]


def big_array(fault: bytes, where: float = 0.5) -> bytes:
    """A large array of small objects with `fault` as one element."""
    items = [b'{"x":[1,2.5,null],"s":"abc"}'] * 400
    items.insert(int(len(items) * where), fault)
    return b"[" + b",".join(items) + b"]"


@pytest.mark.parametrize("fault", [
    b"NaN", b"Infinity", b"-Infinity", b"1e400", b"1" * 400, b"tru", b"[1,]",
    b'"\\u0000"', b'"\\ud800"', b'"\\x"', b'{"a" 1}', b"{1:2}", b'"\xed\xa0\x80"',
])
@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_strict_json_as_for_a_small_message(fault: bytes, where: float) -> None:
    """What is refused in a small message is refused in a large one, with
    the same reason."""
    text = big_array(fault, where)
    reason = error_at_once(text)
    assert reason.startswith("syntax error") or "string" in reason
    assert error_in_pieces(text) == reason


LARGE = b"[" + b",".join([b'"abcdefgh"'] * 30) + b"]"


@pytest.mark.parametrize("text", [
    b"[" + LARGE + b" " + LARGE + b"]",          # no comma between large elements
    b"[" + LARGE + b",]",                        # a comma before the end
    b"[" + LARGE + b",," + LARGE + b"]",
    b"[," + LARGE + b"]",
    b'{"a":' + LARGE + b' "b":1}',
    b'{"a":' + LARGE + b',}',
    b'{"a" ' + LARGE + b"}",                     # no colon after a key
    b'{"a":' + LARGE + b",1:" + LARGE + b"}",    # a key that is no string
    b"[" + LARGE + b"}",                         # the wrong closing bracket
])
def test_faults_between_pieces_give_the_error_of_decoding_at_once(text: bytes) -> None:
    assert error_in_pieces(text, piece=32) == error_at_once(text)


@pytest.mark.parametrize("value", [
    ["x" * 5000, "é" * 3000, 'quote \\" and \\\\' * 200],
    {"k" * 5000: 1, "n": 10**15, "v": "y" * 5000},
    [1.5e300, -(2**53), [[[]]], {}, ""],
    # long strings decoded in slices: none may split an escape, a surrogate
    # pair or a UTF-8 sequence
    ["😀" * 3000, "aé😀\n\\u" * 1000, "\\" * 3000 + "u0000", "\n" * 5000],
    {"s": "x" * 100 + "😀é\t" * 2000},
])
@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_long_strings_keys_and_scalars(value: Any, ensure_ascii: bool) -> None:
    text = ujson.dumps(value, ensure_ascii=ensure_ascii).encode()
    assert decode(text, piece=64, large=128) == [value]


@pytest.mark.parametrize("fault", [b"\\u0000", b"\\ud800", b"\\udc00x", b"\\ud800\\u0041",
                                   b"\\x", b"\\uzzzz", b"\xed\xa0\x80"])
@pytest.mark.parametrize("where", [0, 1000, 2996])
def test_faults_in_a_long_string(fault: bytes, where: int) -> None:
    content = b"abcd" * 1000
    text = b'["' + content[:where] + fault + content[where:] + b'"]'
    assert error_in_pieces(text, piece=64) == error_at_once(text)


def test_deep_nesting_up_to_the_cap() -> None:
    inner = list(range(300))
    text = b"[" * (MAX_DEPTH - 1) + ujson.dumps(inner).encode() + b"]" * (MAX_DEPTH - 1)
    value: Any = inner
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    [decoded] = decode(text, piece=64, large=128, chunk=4096)
    assert ujson.dumps(decoded) == ujson.dumps(value)   # == would recurse too deep
    too_deep = b"[" + text + b"]"
    with pytest.raises(ProtocolError, match="maximum nesting depth"):
        decode(too_deep, piece=64, large=128, chunk=4096)


def test_size_cap_holds() -> None:
    text = ujson.dumps(list(range(5000))).encode()
    framer = Framer(max_size=len(text) - 1, large=100)
    with pytest.raises(ProtocolError, match="message longer than"):
        framer.feed(text)


def test_leftovers_are_freed_in_steps_except_what_is_kept() -> None:
    """Once served, a large message is emptied a step at a time, innermost
    containers first; a container its handler kept, and what it holds, stays whole."""
    value = {"rows": [[i, {"x": i}] for i in range(3000)], "kept": [[i] for i in range(3000)],
             "map": {str(i): i for i in range(3000)}}
    framer = Framer(large=1024, piece=1024)
    out = framer.feed(ujson.dumps(value).encode())
    while framer.decoding:
        out += framer.feed(b"")
    [decoded] = out
    assert decoded == value
    rows, kept, mapping = decoded["rows"], decoded["kept"], decoded["map"]
    [leftovers] = framer.leftovers
    del out, decoded, rows, mapping   # the handler keeps only "kept"
    steps = 1
    while not leftovers.step():
        steps += 1
    assert steps > 20
    assert kept == [[i] for i in range(3000)]
    assert not leftovers.walked


def test_leftovers_of_a_message_still_referenced_are_left_whole() -> None:
    framer = Framer(large=1024, piece=1024)
    out = framer.feed(ujson.dumps([[i, "x"] for i in range(3000)]).encode())
    while framer.decoding:
        out += framer.feed(b"")
    [leftovers] = framer.leftovers
    assert leftovers.step()   # out still holds the whole message
    assert out == [[[i, "x"] for i in range(3000)]]


def test_a_large_message_refused_halfway_is_freed_in_steps_too() -> None:
    framer = Framer(large=1024, piece=1024)
    with pytest.raises(ProtocolError, match="NaN"):
        framer.feed(b"[" + b'{"x":[1,2.5,null],"s":"abc"},' * 5000 + b"NaN]")
        while framer.decoding:
            framer.feed(b"")
    [leftovers] = framer.leftovers
    assert leftovers.walked[0].value   # decoded up to the fault
    steps = 1
    while not leftovers.step():
        steps += 1
    assert steps > 10
