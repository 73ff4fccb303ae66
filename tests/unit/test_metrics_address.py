"""--metrics=[IP:]PORT parsing (tegadb/server/metrics.py)."""

from __future__ import annotations

import pytest

from tegadb.server.metrics import parse_address


@pytest.mark.parametrize(("text", "address"), [
    ("9100", ("127.0.0.1", 9100)),
    (":9100", ("127.0.0.1", 9100)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("[::1]:9100", ("::1", 9100)),
    ("0", ("127.0.0.1", 0)),
])
def test_parse_address(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize(("text", "error"), [
    ("", "--metrics=: expected \\[IP:\\]PORT"),
    ("127.0.0.1", "--metrics=127.0.0.1: expected \\[IP:\\]PORT"),
    ("host:http", "--metrics=host:http: expected \\[IP:\\]PORT"),
    ("70000", "--metrics=70000: port 70000 is out of range"),
])
def test_parse_address_errors(text, error):
    with pytest.raises(ValueError, match=error):
        parse_address(text)
