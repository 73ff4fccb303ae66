"""ovsdb-server's visiting order of a JSON object's members (tegadb/core/hashorder.py).

Each expectation was observed on ovsdb-server 3.1: an insert whose row names
only unknown columns reports the first of them in its order.  The
conformance cases "row order: ..." check the same order against the server.
"""

from __future__ import annotations

import pytest

from tegadb.core.hashorder import ovs_member_order


@pytest.mark.parametrize(("names", "first"), [
    (["i", "zz"], "zz"),
    (["zz", "i"], "zz"),
    (["i", "zzzzzzzzzz"], "i"),
    (["s", "b", "nosuch", "i", "other2"], "other2"),
    (["x", "yy", "zzz", "wwww", "vvvvv"], "vvvvv"),
    # enough members for the hash map to grow (and rehash) several times
    ([f"k{i:02}" for i in range(14)], "k12"),
    ([f"col_{c}" for c in "abcdefghijklmnopqrstuvwxyz"], "col_s"),
])
def test_first_member_is_the_one_ovsdb_server_reports(names: list[str], first: str) -> None:
    order = ovs_member_order(names)
    assert sorted(order) == sorted(names)
    assert order[0] == first

