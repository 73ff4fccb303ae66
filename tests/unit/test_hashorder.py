"""ovsdb-server's visiting orders of JSON members and table columns (core/hashorder.py).

Each expectation was observed on ovsdb-server 3.1: an insert whose row names
only unknown columns reports the first of them in its order, and one that
leaves columns with invalid defaults unset reports the first column it
visits.  The conformance cases "row order: ..." and "insert order: ..." check
the same orders against the server.
"""

from __future__ import annotations

import pytest

from tegadb.core.hashorder import ovs_column_order, ovs_member_order


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



# A table's columns in its schema text's order, and the order in which
# ovsdb-server checked their (all invalid) defaults on insert.
@pytest.mark.parametrize(("columns", "visited"), [
    (["n", "sagopiuz", "bqp", "chxlbn", "tlm", "jviofvj", "eoyhot", "bsahegj", "yhkvro",
      "pcuskqf", "nhbb", "jtvcrcem"],
     ["jtvcrcem", "pcuskqf", "yhkvro", "chxlbn", "bsahegj", "nhbb", "n", "sagopiuz", "eoyhot",
      "bqp", "tlm", "jviofvj"]),
    (["tedyyd", "fzglnnoh", "etqfd", "ojfvu", "yfp", "knharw", "k", "hcioms", "mpv", "xqiq",
      "tpcfpvom", "nrs"],
     ["nrs", "tpcfpvom", "ojfvu", "knharw", "fzglnnoh", "k", "yfp", "mpv", "tedyyd", "xqiq",
      "etqfd", "hcioms"]),
    (["pwfrodn", "a", "rcblcedt", "zpeonyqo", "xizwon", "uqqexh", "tbvgus", "azdjnhwj"],
     ["a", "azdjnhwj", "pwfrodn", "xizwon", "uqqexh", "tbvgus", "rcblcedt", "zpeonyqo"]),
    (["t", "jf", "eltmzglf", "sg"], ["t", "jf", "sg", "eltmzglf"]),
    (["dvjo", "ovxrgit", "duzuag", "tnmzugc", "zcblilo", "yguxjow", "qpqim", "uklxipop",
      "cwrxlzxm"],
     ["tnmzugc", "ovxrgit", "dvjo", "uklxipop", "duzuag", "cwrxlzxm", "zcblilo", "yguxjow",
      "qpqim"]),
    (["xsctxja", "ukcxmt", "jtfhfj", "rz", "h"], ["h", "xsctxja", "rz", "ukcxmt", "jtfhfj"]),
])
def test_columns_in_the_order_ovsdb_server_checks_their_defaults(columns: list[str],
                                                                 visited: list[str]) -> None:
    assert ovs_column_order(columns) == visited
