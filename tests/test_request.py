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
    ("/bad%zz/%4", "/bad%25zz/%254"),  # a stray % is encoded: idempotent
    ("http://example.com/x/../y", "/y"),
    ("https://example.com", "/"),
    # Traefik v3.7 withRoutingPath: every encoding but a reserved character's is decoded.
    ("/a%20b", "/a b"),
    ("/foo%7Bid%7D", "/foo{id}"),
    ("/%22q%22%3C%3E%5E%60%7C", '/"q"<>^`|'),
    ("/caf%C3%A9", "/café"),
    ("/caf%c3%a9", "/café"),
    # ... reserved characters and "%" stay encoded (RFC 3986 section 2.2), upper-cased.
    ("/a%3ab%40c%21%24%26%27%28%29%2A%2B%2C%3B%3D", "/a%3Ab%40c%21%24%26%27%28%29%2A%2B%2C%3B%3D"),
    ("/a%3F%23%5B%5D", "/a%3F%23%5B%5D"),
    ("/100%25", "/100%25"),
    ("/%2541", "/%2541"),
    # ... and, ours, control characters and bytes that are not UTF-8.
    ("/a%0D%0Ab%00%7F", "/a%0D%0Ab%00%7F"),
    ("/x%FF%C3%A9%C3", "/x%FFé%C3"),
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
    # IPv6 literals lose their brackets (Traefik v3.7: `[10::10]` matches Host(`10::10`)).
    ("[::1]:8080", "::1"),
    ("[10::10]", "10::10"),
    ("[10::AB]:443", "10::ab"),
    ("10::10", "10::10"),
    ("", ""),
    (" a.com ", "a.com"),
]


@pytest.mark.parametrize(("raw", "normal"), HOSTS)
def test_host_normalisation(raw: str, normal: str) -> None:
    assert normalize_host(raw) == normal


paths = st.text(alphabet="/.%2eEfF4aAbB~-_?#07C3", max_size=40)


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


@given(st.text(min_size=1, max_size=8).filter(lambda t: all(0x20 < ord(c) != 0x7F for c in t)))
def test_encoded_characters_route_like_plain_ones_unless_reserved(segment: str) -> None:
    # Traefik v3.7: `/foo%20bar` matches Path(`/foo bar`); reserved characters stay encoded.
    encoded = "".join(f"%{byte:02X}" for byte in segment.encode("utf-8"))
    plain = "".join(f"%{ord(ch):02X}" if ch in ":/?#[]@!$&'()*+,;=%" else ch for ch in segment)
    assert normalize_path(f"/x/{encoded}") == normalize_path(f"/x/{plain}")


def test_request_build_keeps_all_values_and_lowercases_header_names() -> None:
    head = kroute.RequestHead.build(
        "get", "A.com:1", "/p?a=1&a=2&b", headers=[("X-A", "1"), ("x-a", "2")], client_ip="::1"
    )
    assert head.method == "get"  # methods are case-sensitive (RFC 9110 section 9.1)
    assert head.headers == {"x-a": ("1", "2")}
    assert head.query == {"a": ("1", "2"), "b": ("",)}
    assert str(head.client_ip) == "::1"
    assert head.stems == ("", "/p")
    assert kroute.RequestHead.build("GET", "h", "/a/b/").stems == ("", "/a", "/a/b")
    assert kroute.RequestHead.build("GET", "h", "/").stems == ("",)


def test_bad_client_ip_is_a_request_error() -> None:
    with pytest.raises(kroute.InvalidRequest, match="not an IP address"):
        kroute.RequestHead.build("GET", "h", "/", client_ip="nope")
