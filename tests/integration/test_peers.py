"""The test infrastructure itself: RawClient framing, both servers, example schemas."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from peers import SCHEMA_DIR, ConnectionClosed, PeerFactory, RawClient


def uuid_of(result: dict[str, Any]) -> str:
    """The UUID string of an insert result {"uuid": ["uuid", S]}."""
    kind, value = result["uuid"]
    assert kind == "uuid"
    return str(value)


def errors(results: list[Any]) -> list[Any]:
    return [r for r in results if isinstance(r, dict) and "error" in r]


# --- RawClient over a socketpair: framing without any server -------------

@pytest.fixture
def pair() -> Any:
    ours, theirs = socket.socketpair()
    client = RawClient(ours, timeout=1.0)
    yield client, theirs
    client.close()
    theirs.close()


def test_concatenated_messages_without_delimiters(pair: Any) -> None:
    client, server = pair
    server.sendall(b'{"id":null,"method":"update","params":[1]}'
                   b'{"id":0,"result":[],"error":null}  \n{"id":"echo","method":"echo","params":[]}')
    assert client.request("echo", []) == {"id": 0, "result": [], "error": None}
    assert client.notifications == [{"id": None, "method": "update", "params": [1]}]
    assert client.recv() == {"id": "echo", "method": "echo", "params": []}


def test_message_split_inside_a_utf8_character(pair: Any) -> None:
    client, server = pair
    data = '{"id":null,"method":"m","params":["h\u00e9\u00e9"]}'.encode()
    cut = data.index(b"\xc3") + 1
    server.sendall(data[:cut])
    with pytest.raises(TimeoutError):
        client.recv(timeout=0.1)
    server.sendall(data[cut:])
    assert client.recv()["params"] == ["h\u00e9\u00e9"]


def test_ids_count_up_from_zero_and_replies_may_come_out_of_order(pair: Any) -> None:
    client, server = pair
    client.send({"method": "transact", "params": ["Test"], "id": client.next_id()})
    server.sendall(b'{"id":1,"result":{},"error":null}{"id":0,"result":[],"error":null}')
    assert client.request("echo", [])["id"] == 1
    assert client.reply(0) == {"id": 0, "result": [], "error": None}


def test_reply_to_id_zero_is_not_a_reply_to_false(pair: Any) -> None:
    client, server = pair
    server.sendall(b'{"id":false,"result":"no","error":null}{"id":0,"result":"yes","error":null}')
    assert client.reply(0)["result"] == "yes"
    assert client.recv()["id"] is False


def test_closed_connection_is_reported(pair: Any) -> None:
    client, server = pair
    server.sendall(b'{"id":null,"method":"update","params":[]}')
    server.close()
    assert client.wait_closed()
    assert client.notifications[0]["method"] == "update"
    with pytest.raises(ConnectionClosed):
        client.recv()


# --- Both servers ---------------------------------------------------------

def test_list_dbs_names_the_database_and_server(peer: PeerFactory) -> None:
    server = peer()
    with server.client() as client:
        reply = client.request("list_dbs", [])
        assert reply["id"] == 0 and reply["error"] is None
        assert sorted(reply["result"]) == ["Test", "_Server"]
        assert client.request("list_dbs", [])["id"] == 1


def test_insert_then_select_round_trips(peer: PeerFactory) -> None:
    server = peer()
    row = {"name": "a", "count": 5, "ratio": 0.5, "flag": True, "color": "red",
           "tags": ["set", ["x", "y"]], "numbers": ["set", [1, 3]],
           "props": ["map", [["k", "v"]]], "serial": 7}
    with server.client() as client:
        inserted = client.transact(
            "Test",
            {"op": "insert", "table": "Root", "row": {**row, "children": ["named-uuid", "kid"]}},
            {"op": "insert", "table": "Child", "uuid-name": "kid", "row": {"value": "k"}})
        assert not errors(inserted)
        root, child = (uuid_of(r) for r in inserted)
        [selected] = client.transact("Test", {"op": "select", "table": "Root",
                                              "where": [["_uuid", "==", ["uuid", root]]]})
    [got] = selected["rows"]
    assert {c: got[c] for c in row} == row
    assert got["children"] == ["uuid", child]
    assert got["note"] == ["set", []] and got["named"] == ["map", []]


def test_unix_and_tcp_reach_the_same_database(peer: PeerFactory) -> None:
    server = peer()
    with server.client() as unix, server.client(tcp=True) as tcp:
        unix.transact("Test", {"op": "insert", "table": "Weak", "row": {"name": "w"}})
        [selected] = tcp.transact("Test", {"op": "select", "table": "Weak", "where": [],
                                           "columns": ["name"]})
    assert selected == {"rows": [{"name": "w"}]}


def test_update_notification_comes_before_the_transact_reply(peer: PeerFactory) -> None:
    server = peer()
    with server.client() as client:
        assert client.request("monitor", ["Test", "m", {"Weak": {"columns": ["name"]}}])[
            "result"] == {}
        [inserted] = client.transact("Test", {"op": "insert", "table": "Weak",
                                              "row": {"name": "w"}})
        # Collected while request() waited for the reply: it came first.
        assert client.notifications == [{
            "id": None, "method": "update",
            "params": ["m", {"Weak": {uuid_of(inserted): {"new": {"name": "w"}}}}]}]


def test_restart_keeps_committed_rows_and_address(peer: PeerFactory) -> None:
    server = peer()
    with server.client() as client:
        client.transact("Test", {"op": "insert", "table": "Weak", "row": {"name": "kept"}})
    port = server.tcp_port
    server.restart()
    assert server.tcp_port == port
    with server.client(tcp=True) as client:
        [selected] = client.transact("Test", {"op": "select", "table": "Weak", "where": [],
                                              "columns": ["name"]})
    assert selected == {"rows": [{"name": "kept"}]}


# --- Example schemas: each loads and takes a realistic transaction --------

KEY_A = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
KEY_B = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
KEY_C = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
KEY_D = "hoVkSat8kmUoSe6IRXTQBwnGpgHCT7cYLfl5ZQPnl5M="

ROUTER_TXN: list[dict[str, Any]] = [
    {"op": "insert", "table": "System",
     "row": {"hostname": "home-gw", "timezone": "Europe/Berlin", "model": "RT-1",
             "serial_number": "SN0001", "firmware_version": "1.0.0",
             "ntp_servers": ["set", ["0.pool.ntp.org", "1.pool.ntp.org"]]}},
    {"op": "insert", "table": "Interface", "uuid-name": "wan",
     "row": {"name": "eth0", "type": "ethernet", "enabled": True, "addressing": "dhcp",
             "mac": "02:00:00:00:00:01"}},
    {"op": "insert", "table": "Interface", "uuid-name": "lan",
     "row": {"name": "br-lan", "type": "bridge", "enabled": True, "mtu": 1500,
             "addressing": "static",
             "addresses": ["set", ["192.168.1.1/24", "fd00:1::1/64"]]}},
    {"op": "insert", "table": "SSID", "uuid-name": "home",
     "row": {"ssid": "HomeNet", "encryption": "wpa2-wpa3-psk", "psk": "correct horse",
             "network": ["named-uuid", "lan"]}},
    {"op": "insert", "table": "Radio",
     "row": {"name": "radio0", "band": "5GHz", "enabled": True, "channel": 36,
             "channel_width": 80, "country": "DE", "ssids": ["named-uuid", "home"]}},
    {"op": "insert", "table": "Radio",
     "row": {"name": "radio1", "band": "2.4GHz", "enabled": True, "channel_width": 20,
             "country": "DE", "ssids": ["named-uuid", "home"]}},
    {"op": "insert", "table": "Firewall_Zone", "uuid-name": "zlan",
     "row": {"name": "lan", "interfaces": ["named-uuid", "lan"],
             "input": "accept", "output": "accept", "forward": "accept"}},
    {"op": "insert", "table": "Firewall_Zone", "uuid-name": "zwan",
     "row": {"name": "wan", "interfaces": ["named-uuid", "wan"], "masquerade": True,
             "input": "drop", "output": "accept", "forward": "drop"}},
    {"op": "insert", "table": "Firewall_Rule",
     "row": {"priority": 100, "description": "Allow-Ping", "enabled": True,
             "src_zone": ["named-uuid", "zwan"], "protocols": "icmp", "action": "accept"}},
    {"op": "insert", "table": "Firewall_Rule",
     "row": {"priority": 200, "description": "Forward-HTTPS", "enabled": True,
             "src_zone": ["named-uuid", "zwan"], "dest_zone": ["named-uuid", "zlan"],
             "protocols": ["set", ["tcp", "udp"]], "dest_ports": 443,
             "dest_addresses": "192.168.1.10", "action": "accept"}},
    {"op": "insert", "table": "Static_Lease", "uuid-name": "nas",
     "row": {"mac": "02:00:00:00:00:10", "ip": "192.168.1.10", "hostname": "nas"}},
    {"op": "insert", "table": "DHCP_Pool",
     "row": {"interface": ["named-uuid", "lan"], "enabled": True,
             "range_start": "192.168.1.100", "range_end": "192.168.1.250",
             "lease_time": 43200, "options": ["map", [[42, "192.168.1.1"]]],
             "static_leases": ["named-uuid", "nas"]}},
]

VPN_TXN: list[dict[str, Any]] = [
    {"op": "insert", "table": "Rotation_Policy",
     "row": {"key_lifetime": 7776000, "overlap": 86400, "rotate_psk": True}},
    {"op": "insert", "table": "Gateway", "uuid-name": "gw_hq",
     "row": {"name": "hq-1", "public_key": KEY_A, "key_rotated_at": 1767225600000,
             "endpoint": "vpn.example.net:51820", "listen_port": 51820,
             "tunnel_address": "10.255.0.1/32"}},
    {"op": "insert", "table": "Gateway", "uuid-name": "gw_branch",
     "row": {"name": "branch-1", "public_key": KEY_B, "key_rotated_at": 1767225600000,
             "listen_port": 51820, "tunnel_address": "10.255.0.2/32", "mtu": 1420}},
    {"op": "insert", "table": "Site", "uuid-name": "hq",
     "row": {"name": "hq", "subnets": ["set", ["10.1.0.0/16", "fd00:1::/48"]],
             "gateways": ["named-uuid", "gw_hq"]}},
    {"op": "insert", "table": "Site", "uuid-name": "branch",
     "row": {"name": "branch", "subnets": "10.2.0.0/16",
             "gateways": ["named-uuid", "gw_branch"]}},
    {"op": "insert", "table": "Tunnel",
     "row": {"site_a": ["named-uuid", "hq"], "site_b": ["named-uuid", "branch"],
             "enabled": True, "keepalive": 25, "preshared_key": KEY_C,
             "psk_rotated_at": 1767225600000}},
    {"op": "insert", "table": "Peer",
     "row": {"name": "alice-laptop", "owner": "alice@example.com",
             "site": ["named-uuid", "hq"], "enabled": True, "public_key": KEY_D,
             "key_created_at": 1767225600000, "key_expires_at": 1775001600000,
             "tunnel_address": "10.255.1.2/32",
             "allowed_ips": ["set", ["10.1.0.0/16", "10.2.0.0/16"]]}},
]

IOT_TXN: list[dict[str, Any]] = [
    {"op": "insert", "table": "Firmware", "uuid-name": "fw",
     "row": {"model": "TH-100", "version": "2.1.0",
             "url": "https://fw.example.com/th-100/2.1.0.bin", "sha256": "ab" * 32,
             "size": 524288, "released_at": 1767225600000, "channel": "stable"}},
    {"op": "insert", "table": "Device_Group", "uuid-name": "building",
     "row": {"name": "building-7", "desired_config": ["map", [["report_interval", "60"]]]}},
    {"op": "insert", "table": "Device_Group", "uuid-name": "floor",
     "row": {"name": "building-7-floor-2", "parent": ["named-uuid", "building"],
             "target_firmware": ["named-uuid", "fw"]}},
    {"op": "insert", "table": "Fleet",
     "row": {"name": "acme", "heartbeat_interval": 60, "offline_after": 300,
             "default_group": ["named-uuid", "building"]}},
    {"op": "insert", "table": "Sensor", "uuid-name": "temp",
     "row": {"name": "temp0", "kind": "temperature", "unit": "degC", "sample_interval": 30,
             "thresholds": ["map", [["max", 28.5], ["min", 16]]]}},
    {"op": "insert", "table": "Sensor", "uuid-name": "hum",
     "row": {"name": "hum0", "kind": "humidity", "unit": "%", "sample_interval": 60}},
    {"op": "insert", "table": "Device",
     "row": {"serial": "TH100-000042", "model": "TH-100", "enrolled_at": 1767225600000,
             "group": ["named-uuid", "floor"],
             "desired_config": ["map", [["report_interval", "30"]]],
             "sensors": ["set", [["named-uuid", "temp"], ["named-uuid", "hum"]]],
             "status": "online", "last_seen": 1767225601000}},
]

# One rule per schema that the transaction above must not get past.
VIOLATIONS: dict[str, dict[str, Any]] = {
    "router": {"op": "insert", "table": "SSID",
               "row": {"ssid": "Guest", "encryption": "wpa2-psk", "psk": "short"}},
    "vpn": {"op": "insert", "table": "Gateway",
            "row": {"name": "bad", "public_key": "not-a-key", "listen_port": 1,
                    "tunnel_address": "10.255.0.9/32"}},
    "iot": {"op": "insert", "table": "Firmware",
            "row": {"model": "TH-100", "version": "2.1.0", "url": "https://x.example/",
                    "sha256": "cd" * 32, "size": 1, "channel": "beta"}},
}

EXAMPLES = {"router": ("Router", ROUTER_TXN), "vpn": ("VPN", VPN_TXN), "iot": ("IoT", IOT_TXN)}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_example_schema_takes_a_realistic_transaction(peer: PeerFactory, example: str) -> None:
    db, ops = EXAMPLES[example]
    server = peer(SCHEMA_DIR / f"{example}.ovsschema")
    with server.client() as client:
        results = client.transact(db, *ops)
        assert not errors(results), results
        assert len(results) == len(ops)
        tables = {op["table"] for op in ops}
        counts = client.transact(db, *({"op": "select", "table": t, "where": [],
                                        "columns": ["_uuid"]} for t in sorted(tables)))
        for table, result in zip(sorted(tables), counts):
            inserted = sum(op["table"] == table for op in ops)
            assert len(result["rows"]) == inserted, table  # nothing garbage-collected
        [violation] = errors(client.transact(db, VIOLATIONS[example]))
        assert violation["error"] == "constraint violation"


def test_example_schemas_are_all_covered() -> None:
    assert {p.stem for p in Path(SCHEMA_DIR).glob("*.ovsschema")} == set(EXAMPLES)
