"""A relay's copy, driven as its follower drives it (relay.RelayService is the
UpdateSink): what the source sends becomes the copy's transactions, with the
source's ids, and the relay's own clients see exactly the changes, no more."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from harness import SCHEMA_JSON, Client

from tegadb.core.errors import OVSDBError
from tegadb.core.types import ZERO_UUID
from tegadb.server.relay import RelayService, parse_relay
from tegadb.server.service import ServerDatabases

A, B, C, D = (f"0a000000-0000-4000-8000-00000000000{i}" for i in range(4))
V1, V2, V3 = (f"0b000000-0000-4000-8000-00000000000{i}" for i in range(3))
T1, T2, T3 = (f"0c000000-0000-4000-8000-00000000000{i}" for i in range(3))


class Relay:
    """A RelayService served as the server serves it, with no follower."""

    def __init__(self) -> None:
        self.service = RelayService.create("Test", ["tcp:127.0.0.1:6640"])
        self.databases = ServerDatabases([self.service])
        self.databases.attach(lambda: None, lambda delay, callback: None)
        self.service.databases = self.databases

    def client(self) -> Client:
        return Client(self.databases, "unix:test")

    def rows(self) -> dict[str, dict[str, Any]]:
        """Root's rows as JSON (name, count, tags, props, _version)."""
        table = self.service.database.tables["Root"]
        return {uuid: table.row_json(row, ["name", "count", "tags", "props", "_version"])
                for uuid, row in table.rows.items()}

    def turn(self) -> None:
        self.databases.flush_sessions()


def initial(**rows: dict[str, Any]) -> dict[str, Any]:
    return {"Root": {uuid: {"initial": row} for uuid, row in rows.items()}}


ROW_A = {"name": "a", "count": 1, "tags": ["set", ["x", "y"]],
         "props": ["map", [["k", "v"], ["gone", "1"]]], "_version": ["uuid", V1]}
ROW_B = {"name": "b", "count": 2, "_version": ["uuid", V1]}


@pytest.fixture
def relay() -> Relay:
    relay = Relay()
    relay.service.start(SCHEMA_JSON, False, initial(**{A: ROW_A, B: ROW_B}), T1)
    return relay


def test_the_first_contact_takes_the_schema_rows_versions_and_id(relay: Relay) -> None:
    assert relay.service.schema_json["name"] == "Test"
    assert set(relay.service.schema.tables) == set(SCHEMA_JSON["tables"])
    assert relay.rows()[A] == {"name": "a", "count": 1, "tags": ["set", ["x", "y"]],
                               "props": ["map", [["gone", "1"], ["k", "v"]]],
                               "_version": ["uuid", V1]}
    assert relay.service.last_txn == T1
    client = relay.client()
    request = client.send("transact", "_Server", {
        "op": "select", "table": "Database", "where": [["name", "==", "Test"]],
        "columns": ["model", "connected", "leader", "schema"]})
    (state,) = client.reply(request)["result"][0]["rows"]
    assert (state["model"], state["connected"], state["leader"]) == ("clustered", True, True)
    assert json.loads(state["schema"])["name"] == "Test"


def test_an_update_applies_diffs_with_the_source_s_id(relay: Relay) -> None:
    client = relay.client()
    since = client.send("monitor_cond_since", "Test", "m", {"Root": [{}]}, T1)
    assert client.reply(since)["result"] == [True, T1, {}]
    relay.service.update({"Root": {
        A: {"modify": {"tags": ["set", ["y", "z"]], "props": ["map", [["k", "w"], ["gone", "1"]]],
                       "count": 5, "_version": ["uuid", V2]}},
        B: {"delete": None},
        C: {"insert": {"name": "c", "_version": ["uuid", V2]}}}}, T2)
    relay.turn()
    assert relay.rows()[A] == {"name": "a", "count": 5, "tags": ["set", ["x", "z"]],
                               "props": ["map", [["k", "w"]]], "_version": ["uuid", V2]}
    assert set(relay.rows()) == {A, C}
    ((_, txn, body),) = client.notifications("update3")
    assert txn == T2 and relay.service.last_txn == T2
    assert body["Root"][B] == {"delete": None}
    assert body["Root"][C] == {"insert": {"name": "c", "_version": ["uuid", V2]}}


def test_the_relay_s_clients_resume_against_its_history(relay: Relay) -> None:
    relay.service.update({"Root": {C: {"insert": {"name": "c"}}}}, T2)
    relay.service.update({"Root": {C: {"modify": {"count": 3}}}}, T3)
    client = relay.client()
    since = client.send("monitor_cond_since", "Test", "m", {"Root": [{"columns": ["count"]}]},
                        T2)
    assert client.reply(since)["result"] == [True, T3, {"Root": {C: {"modify": {"count": 3}}}}]


def test_a_full_resync_shows_clients_only_what_changed(relay: Relay) -> None:
    client = relay.client()
    client.send("monitor_cond", "Test", "m", {"Root": [{"columns": ["name", "count", "props"]}]})
    changed_b = {**ROW_B, "count": 0, "_version": ["uuid", V2]}  # back to the default
    relay.service.disconnected()
    relay.service.start(SCHEMA_JSON, False, initial(**{A: ROW_A, B: changed_b,
                                                       D: {"name": "d"}}), ZERO_UUID)
    relay.turn()
    ((_, body),) = client.notifications("update2")
    assert body == {"Root": {B: {"modify": {"count": 0}}, D: {"insert": {"name": "d"}}}}
    assert relay.rows()[B]["count"] == 0 and relay.rows()[B]["_version"] == ["uuid", V2]
    # The standalone source's zero id: the relay numbers the resync itself.
    assert relay.service.last_txn not in (T1, ZERO_UUID)
    relay.service.start(SCHEMA_JSON, False, initial(**{A: ROW_A, B: changed_b,
                                                       D: {"name": "d"}}), ZERO_UUID)
    relay.turn()
    assert len(client.notifications("update2")) == 1  # the same contents: nothing


def test_a_resync_removes_rows_the_source_no_longer_has(relay: Relay) -> None:
    relay.service.start(SCHEMA_JSON, False, initial(**{B: ROW_B}), T2)
    assert set(relay.rows()) == {B}


def test_a_schema_change_is_followed_and_ends_the_old_monitors(relay: Relay) -> None:
    aware, unaware = relay.client(), relay.client()
    aware.send("set_db_change_aware", True)
    for client in (aware, unaware):
        client.send("monitor_cond", "Test", "m", {"Root": [{}]})
    schema = copy.deepcopy(SCHEMA_JSON)
    schema["version"] = "9.0.0"
    schema["tables"]["Root"]["columns"]["extra"] = {"type": "integer"}
    relay.service.start(schema, False, initial(**{A: {"name": "a", "extra": 7}}), T2)
    assert aware.notifications("monitor_canceled") == [["m"]]
    assert unaware.closed and not aware.closed
    assert relay.service.schema.version == "9.0.0"
    assert relay.service.database.tables["Root"].rows[A]["extra"] == (7,)


def test_what_does_not_fit_the_copy_is_refused(relay: Relay) -> None:
    """The follower then resynchronizes from scratch."""
    with pytest.raises(OVSDBError, match="copy lacks"):
        relay.service.update({"Root": {D: {"modify": {"count": 1}}}}, T2)
    with pytest.raises(OVSDBError, match="No column nosuch"):
        relay.service.update({"Root": {A: {"modify": {"nosuch": 1}}}}, T2)
    assert relay.service.last_txn == T1


def test_reads_run_on_the_copy(relay: Relay) -> None:
    client = relay.client()
    request = client.send("transact", "Test", {"op": "select", "table": "Root",
                                               "where": [["name", "==", "b"]],
                                               "columns": ["count"]})
    assert client.reply(request)["result"] == [{"rows": [{"count": 2}]}]


def test_a_relay_is_not_converted_here(relay: Relay) -> None:
    client = relay.client()
    request = client.send("convert", "Test", SCHEMA_JSON)
    assert client.reply(request)["error"]["error"] == "not allowed"


@pytest.mark.parametrize(("text", "expected"), [
    ("relay:Test:tcp:127.0.0.1:6640", ("Test", ["tcp:127.0.0.1:6640"])),
    ("relay:NB:unix:/a.sock,tcp:10.0.0.1:6641", ("NB", ["unix:/a.sock", "tcp:10.0.0.1:6641"])),
])
def test_relay_arguments(text: str, expected: tuple[str, list[str]]) -> None:
    assert parse_relay(text) == expected


@pytest.mark.parametrize("text", ["relay:Test", "relay::tcp:1.2.3.4:5", "relay:_Server:unix:x",
                                  "relay:Test:ftp:x"])
def test_bad_relay_arguments(text: str) -> None:
    with pytest.raises(ValueError, match="relay:"):
        parse_relay(text)
