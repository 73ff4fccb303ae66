#!/usr/bin/env python3
"""An example controller: watch the router's interfaces and react to changes.

    python examples/watch_interfaces.py [REMOTE[,REMOTE...]]

(default ``unix:var/tegadb.sock``, the socket ``tegadb-server`` serves with no
arguments; from a checkout without ``pip install .``, prefix the command with
``PYTHONPATH=.``).

It keeps a replica of the ``Interface`` table of the ``Router`` database
(schemas/router.ovsschema), prints every change as it arrives, and gives each
enabled interface that has no MTU the default one.  That write is an
optimistic transaction: it reads the row, so if someone else changes the row
first it runs again on the fresh copy, and then finds nothing left to do if
the MTU is set.  The replica reconnects by itself (to the next remote, if
several are given) and carries on.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from tegadb.client import Change, Replica, Row, Transaction

DEFAULT_MTU = 1500


def describe(change: Change) -> str:
    """One line for a change: what happened to which interface."""
    if change.kind == "insert":
        assert change.new is not None
        state = "enabled" if change.new.enabled else "disabled"
        return f"{change.new.name}: added ({change.new.type}, {state})"
    if change.kind == "delete":
        assert change.old is not None
        return f"{change.old.name}: removed"
    old, new = change.old, change.new
    assert old is not None and new is not None
    changed = [f"{column} {old[column]!r} -> {new[column]!r}"
               for column in new if column != "_version" and new[column] != old[column]]
    return f"{new.name}: {', '.join(changed)}"


def needs_mtu(row: Row) -> bool:
    return bool(row.enabled) and row.mtu is None


async def give_default_mtu(replica: Replica, row_uuid: uuid.UUID) -> None:
    def prepare(txn: Transaction) -> bool:
        row = replica.rows("Interface").get(row_uuid)
        if row is None or not needs_mtu(txn.read(row)):
            return False  # gone, or someone else got there first
        txn.set(row, "mtu", DEFAULT_MTU)
        return True

    try:
        if await replica.transact(prepare):
            print(f"{replica.rows('Interface')[row_uuid].name}: gave it MTU {DEFAULT_MTU}", flush=True)
    except ConnectionError as e:
        print(f"not connected ({e}); the next change will tell again", flush=True)


async def watch(remotes: list[str]) -> None:
    async with await Replica.open(remotes, "Router", tables={"Interface": []}) as replica:
        changes = replica.changes()  # from now on: nothing falls between the snapshot and the stream
        interfaces = list(replica.rows("Interface").values())
        print(f"watching {len(interfaces)} interfaces", flush=True)
        for row in interfaces:
            if needs_mtu(row):
                await give_default_mtu(replica, row._uuid)
        async for change in changes:
            print(describe(change), flush=True)
            if change.new is not None and needs_mtu(change.new):
                await give_default_mtu(replica, change.uuid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("remotes", nargs="?", default="unix:var/tegadb.sock",
                        help="where the Router database is served (comma-separated for fail-over)")
    args = parser.parse_args()
    try:
        asyncio.run(watch(args.remotes.split(",")))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
