"""Request normalisation (docs/rules.md "Path normalisation"): one form, applied everywhere."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kroute
from kroute import normalize_host, normalize_path

PATHS = [
    ("/", "/"),
    ("", "/"),
    ("a/b", "/a/b"),
    ("/a/b?x=1#frag", "/a/b"),
    ("//a///b", "/a/b"),
    ("/a/b/", "/a/b/"),
    ("/a/./b", "/a/b"),
    ("/a/b/..", "/a/"),
    ("/a/b/../c", "/a/c"),
    ("/../../etc/passwd", "/etc/passwd"),
    ("/a/%2E%2E/b", "/b"),
    ("/a/%2e/b", "/a/b"),
    ("/%7Euser/%41%62c", "/~user/Abc"),
    ("/a%2Fb", "/a%2Fb"),
    ("/a%2fb", "/a%2Fb"),
    ("/a%20b", "/a%20b"),
    ("/bad%zz/%4", "/bad%25zz/%254"),  # a stray % is encoded: idempotent
    ("http://example.com/x/../y", "/y"),
    ("https://example.com", "/"),
    ("/caf%C3%A9", "/caf%C3%A9"),
]


@pytest.mark.parametrize(("raw", "normal"), PATHS)
def test_path_normalisation(raw: str, normal: str) -> None:
    # RFC 3986 sections 6.2.2.1, 6.2.2.2 and 5.2.4, plus merged slashes.
    assert normalize_path(raw) == normal


HOSTS = [
    ("Example.COM", "example.com"),
    ("example.com:8080", "example.com"),
    ("example.com.", "example.com"),
    ("example.com.:80", "example.com"),
    ("[::1]:8080", "[::1]"),
    ("", ""),
    (" a.com ", "a.com"),
]


@pytest.mark.parametrize(("raw", "normal"), HOSTS)
def test_host_normalisation(raw: str, normal: str) -> None:
    assert normalize_host(raw) == normal


paths = st.text(alphabet="/.%2eEfF4aAbB~-_?#", max_size=40)


@given(paths)
def test_normalisation_is_idempotent_and_leaves_no_dot_segments(raw: str) -> None:
    normal = normalize_path(raw)
    assert normal.startswith("/")
    assert normalize_path(normal) == normal
    assert "//" not in normal
    segments = normal.split("/")[1:]
    assert "." not in segments
    assert ".." not in segments


@given(st.text(alphabet="abcXYZ019-._~", min_size=1, max_size=12))
def test_encoded_unreserved_characters_route_like_plain_ones(segment: str) -> None:
    encoded = "".join(f"%{ord(ch):02x}" for ch in segment)
    assert normalize_path(f"/x/{encoded}") == normalize_path(f"/x/{segment}")


def test_request_build_keeps_all_values_and_lowercases_header_names() -> None:
    head = kroute.RequestHead.build(
        "get", "A.com:1", "/p?a=1&a=2&b", headers=[("X-A", "1"), ("x-a", "2")], client_ip="::1"
    )
    assert head.method == "GET"
    assert head.headers == {"x-a": ("1", "2")}
    assert head.query == {"a": ("1", "2"), "b": ("",)}
    assert str(head.client_ip) == "::1"
    assert head.stems == ("", "/p")
    assert kroute.RequestHead.build("GET", "h", "/a/b/").stems == ("", "/a", "/a/b")
    assert kroute.RequestHead.build("GET", "h", "/").stems == ("",)


def test_bad_client_ip_is_a_request_error() -> None:
    with pytest.raises(kroute.InvalidRequest, match="not an IP address"):
        kroute.RequestHead.build("GET", "h", "/", client_ip="nope")
