"""Node identities and address parsing."""

from __future__ import annotations

import pytest

from overlay.ids import MAX_HOST_LEN, MAX_NAME_LEN, NodeId, parse_addr
from overlay.io import SEED_NAME, is_seed, seed_id


def test_node_id_fields_and_text() -> None:
    n = NodeId("alpha", "10.0.0.1", 7946)
    assert n.addr == "10.0.0.1:7946"
    assert str(n) == "alpha@10.0.0.1:7946"


def test_ipv6_address_is_bracketed() -> None:
    n = NodeId("v6", "fe80::1", 7946)
    assert n.addr == "[fe80::1]:7946"
    assert str(n) == "v6@[fe80::1]:7946"
    assert parse_addr(n.addr) == ("fe80::1", 7946)


def test_node_id_is_hashable_equal_by_value_and_totally_ordered() -> None:
    a1 = NodeId("a", "h", 1)
    a2 = NodeId("a", "h", 1)
    b = NodeId("b", "h", 1)
    assert a1 == a2 and hash(a1) == hash(a2)
    assert {a1: 1}[a2] == 1
    assert sorted([b, NodeId("a", "h", 2), a1]) == [a1, NodeId("a", "h", 2), b]


def test_node_id_is_immutable() -> None:
    n = NodeId("a", "h", 1)
    with pytest.raises(AttributeError):
        n.port = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "host", "port"),
    [
        ("", "h", 1),
        ("x" * (MAX_NAME_LEN + 1), "h", 1),
        ("a", "", 1),
        ("a", "h" * (MAX_HOST_LEN + 1), 1),
        ("a", "h", -1),
        ("a", "h", 65536),
    ],
)
def test_node_id_rejects_bad_fields(name: str, host: str, port: int) -> None:
    with pytest.raises(ValueError):
        NodeId(name, host, port)


def test_node_id_accepts_the_limits() -> None:
    NodeId("x" * MAX_NAME_LEN, "h" * MAX_HOST_LEN, 0)
    NodeId("x", "h", 65535)


def test_seed_ids() -> None:
    s = seed_id("seed.example", 7946)
    assert s == NodeId(SEED_NAME, "seed.example", 7946)
    assert is_seed(s)
    assert not is_seed(NodeId("real", "seed.example", 7946))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1:7946", ("10.0.0.1", 7946)),
        ("  host.example:1  ", ("host.example", 1)),
        ("[::1]:65535", ("::1", 65535)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
    ],
)
def test_parse_addr(text: str, expected: tuple[str, int]) -> None:
    assert parse_addr(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "host",  # no port
        ":7946",  # no host
        "host:",  # empty port
        "host:abc",
        "host:0",
        "host:65536",
        "host:-1",
        "host:+80",  # int() would take these; an address must not
        "host: 80",
        "host:8_0",
        "[::1]",  # bracketed without a port
        "[::1]7946",
        "[::1:7946",
        "[]:7946",
        "::1:7946",  # IPv6 without brackets is ambiguous
        "fe80::1",  # ... and would otherwise parse as host 'fe80:' port 1
    ],
)
def test_parse_addr_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_addr(text)
