"""The order in which ovsdb-server visits the members of a JSON object.

ovsdb-server keeps a JSON object's members in a hash map (OVS's ``shash``)
and checks them in that map's order, so of several bad members it reports
the first in hash order, not in the text's order.  This reproduces that
order: OVS's ``hash_string`` (murmur3-style ``hash_bytes`` with basis 0, its
portable form) and the bucket order of its ``hmap``, which grows as members
are added, each insertion and each rehash putting a node at the head of its
bucket.  The engine uses it only on error paths (valid input is read in
any order); tegadb-client lists tables, columns and rows in this order, as
ovsdb-client does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

_MASK32 = 0xFFFFFFFF


def _rotate(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK32


def _hash_add(h: int, data: int) -> int:
    if data:  # a zero word leaves the hash unchanged (OVS's mhash_add__)
        data = _rotate(data * 0xCC9E2D51 & _MASK32, 15) * 0x1B873593 & _MASK32
        h ^= data
    return (_rotate(h, 13) * 5 + 0xE6546B64) & _MASK32


def ovs_hash_string(text: str) -> int:
    """OVS's ``hash_string(text, 0)``."""
    data = text.encode()
    n = len(data)
    h = 0
    for i in range(0, n, 4):
        h = _hash_add(h, int.from_bytes(data[i:i + 4], "little"))
    h ^= n
    h ^= h >> 16
    h = h * 0x85EBCA6B & _MASK32
    h ^= h >> 13
    h = h * 0xC2B2AE35 & _MASK32
    return h ^ (h >> 16)


def _grown_mask(n: int) -> int:
    """OVS's ``calc_mask``: the bucket mask of an hmap holding ``n`` nodes."""
    mask = n // 2
    for shift in (1, 2, 4, 8, 16, 32):
        mask |= mask >> shift
    return mask | (mask & 1) << 1


def ovs_member_order(names: Iterable[str]) -> list[str]:
    """``names`` (distinct, in the order they were added) in ovsdb-server's visiting order."""
    return ovs_hmap_order(names, ovs_hash_string)


def ovs_hmap_order(keys: Iterable[str], hash_of: Callable[[str], int]) -> list[str]:
    """``keys`` (distinct, in the order they were added to an OVS hmap, each
    under ``hash_of(key)``) in the order the hmap visits them."""
    mask = 0
    buckets: list[list[tuple[str, int]]] = [[]]
    count = 0
    for key in keys:
        h = hash_of(key)
        buckets[h & mask].insert(0, (key, h))
        count += 1
        if count // 2 > mask:
            new_mask = _grown_mask(count)
            if new_mask > mask:
                grown: list[list[tuple[str, int]]] = [[] for _ in range(new_mask + 1)]
                for bucket in buckets:
                    for node in bucket:
                        grown[node[1] & new_mask].insert(0, node)
                buckets, mask = grown, new_mask
    return [key for bucket in buckets for key, _ in bucket]


def ovs_column_order(names: list[str]) -> list[str]:
    """A table's user columns, given in their schema text's order, in the order
    ovsdb-server visits them (as when it checks the defaults of an insert).

    The columns pass through several hash maps on their way: ovsdb-tool
    reads the schema's ``columns`` object into one, adds the columns, after
    ``_uuid`` and ``_version``, to the table's map, writes them out from that
    map into the database file, and ovsdb-server reads them back the same way.
    """
    implicit = ["_uuid", "_version"]
    written = _user(ovs_member_order(implicit + ovs_member_order(names)))
    read = ovs_member_order(ovs_member_order(written))
    return _user(ovs_member_order(implicit + read))


def _user(names: list[str]) -> list[str]:
    return [name for name in names if name not in ("_uuid", "_version")]


__all__ = ["ovs_column_order", "ovs_hash_string", "ovs_member_order"]
