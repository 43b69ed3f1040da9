"""The protection middlewares offline: basicAuth (htpasswd hashes, credentials parsing, Secrets),
ipAllowList and the ipStrategy, rateLimit's token buckets on an injected clock and their memory
bound, inFlightReq's counts; and what explain shows of them."""

from __future__ import annotations

import base64
import tracemalloc
from typing import Any

import bcrypt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kroute import compile_objects
from kroute.objects import FieldError, ObjectRef
from kroute.pipeline.steps import Answer, UpstreamRequest, run_end
from kroute.rules.middlewares import compile_middleware, htpasswd
from kroute.rules.middlewares.basicauth import BasicAuth, basic_auth, basic_credentials
from kroute.rules.middlewares.inflight import InFlight, in_flight
from kroute.rules.middlewares.ipallowlist import ip_allow_list
from kroute.rules.middlewares.ratelimit import (
    MAX_SOURCES,
    Buckets,
    RateLimit,
    go_duration,
    rate_limit,
)
from kroute.rules.middlewares.sources import source_criterion
from kroute.rules.preview import preview
from kroute.testing import request_from_url

REF = ObjectRef("Middleware", "default", "test-auth")
# Traefik's documentation example: test/test and test2/test2 (htpasswd -m).
TRAEFIK_USERS = ["test:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/",
                 "test2:$apr1$d9hr9HBB$4HxwgUir3HP4EsggP/QNo0"]  # fmt: skip
BCRYPTED = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()


def req(headers: list[tuple[bytes, bytes]] | None = None, client: str = "203.0.113.9",
        clock: Any = None) -> UpstreamRequest:  # fmt: skip
    return UpstreamRequest("GET", "/", None, [(b"Host", b"a.test"), *(headers or [])], "/",
                           client=client, clock=clock)  # fmt: skip


def basic(user: str, password: str) -> tuple[bytes, bytes]:
    return (b"Authorization", b"Basic " + base64.b64encode(f"{user}:{password}".encode()))


def secret(name: str, data: dict[str, str], kind: str = "Opaque") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": kind,
            "metadata": {"name": name, "namespace": "default"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}  # fmt: skip


# -- htpasswd ---------------------------------------------------------------------------


def test_md5_crypt_matches_apache_and_freebsd() -> None:
    # (openssl passwd -apr1 -salt H6uskkkW test; openssl passwd -1 -salt abcdefgh secret)
    assert htpasswd.check(b"test", "$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/")
    assert htpasswd.check(b"secret", "$1$abcdefgh$cHJi5PXp/ki/ktXzqlk6I1")
    assert not htpasswd.check(b"tesT", "$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/")


def test_sha1_and_bcrypt() -> None:
    sha = "{SHA}" + base64.b64encode(__import__("hashlib").sha1(b"pw").digest()).decode()
    assert htpasswd.check(b"pw", sha)
    assert not htpasswd.check(b"pW", sha)
    assert htpasswd.check(b"s3cret", BCRYPTED)
    assert not htpasswd.check(b"s3creT", BCRYPTED)
    for prefix in ("$2y$", "$2a$"):  # (htpasswd -B writes $2y$; Go reads all three)
        assert htpasswd.check(b"s3cret", prefix + BCRYPTED[4:])


def test_bcrypt_verdicts_are_remembered_per_user_hash_and_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verified = htpasswd.Verified(limit=2, failures=2)
    calls: list[bytes] = []
    real = htpasswd.check

    def counted(password: bytes, stored: str) -> bool:
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(htpasswd, "check", counted)
    assert [verified.check("u", b"s3creT", BCRYPTED) for _ in range(2)] == [False, False]
    assert [verified.check("u", b"s3cret", BCRYPTED) for _ in range(3)] == [True, True, True]
    assert calls == [b"s3creT", b"s3cret"]  # each verdict paid bcrypt once
    # Another user name is another entry: two unknown users checked against one dummy hash
    # both pay bcrypt on their first try (no enumeration by timing).
    assert not verified.check("v", b"s3creT", BCRYPTED)
    assert calls[-1] == b"s3creT"
    assert len(calls) == 3
    other = "$2b$04$" + BCRYPTED[7:29] + "." * 31  # (the same password under another hash)
    assert not verified.check("u", b"s3cret", other)  # remembered per hash, not per password
    assert verified.check("u", b"s3cret", "$2y$" + BCRYPTED[4:])
    assert verified.check("u", b"s3cret", "$2a$" + BCRYPTED[4:])  # a third match: starts again
    assert len(calls) == 6
    assert verified.check("u", b"s3cret", "$2a$" + BCRYPTED[4:])  # (kept after the restart)
    assert len(calls) == 6


def test_wrong_passwords_never_push_out_the_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failures are kept apart, bounded on their own: a flood of wrong passwords leaves the
    right ones remembered."""
    verified = htpasswd.Verified(limit=4, failures=3)
    monkeypatch.setattr(htpasswd, "check", lambda password, stored: password == b"right")
    assert verified.check("u", b"right", BCRYPTED)
    for i in range(50):
        assert not verified.check("u", b"wrong %d" % i, BCRYPTED)
    monkeypatch.setattr(htpasswd, "check", lambda password, stored: pytest.fail("not kept"))
    assert verified.check("u", b"right", BCRYPTED)
    assert verified.known("u", b"wrong 49", BCRYPTED)[0] is False
    assert verified.known("u", b"wrong 0", BCRYPTED)[0] is None  # (bounded: forgotten)


def test_plain_text_never_matches_and_is_refused_at_compile() -> None:
    assert not htpasswd.check(b"plain", "plain")
    with pytest.raises(FieldError, match="plain password never matches"):
        basic_auth({"users": ["user:plain"]}, "spec.basicAuth", REF, {})


def test_the_dummy_hash_has_the_cost_of_the_real_one_and_matches_nothing() -> None:
    fake = htpasswd.dummy(BCRYPTED)
    assert fake[:7] == BCRYPTED[:7]
    assert htpasswd.valid(fake)
    assert not htpasswd.check(b"s3cret", fake)
    assert not htpasswd.check(b"", fake)
    step = basic_auth({"users": [f"u:{BCRYPTED}", TRAEFIK_USERS[0]]}, "f", REF, {})
    assert isinstance(step, BasicAuth)
    assert step.dummy[:7] == BCRYPTED[:7]


# -- basicAuth --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    None, b"", b"Bearer abc", b"Basic", b"Basic !!!!", b"Basic dGVzdA==",  # no colon
    b"Basic dGVzdDp0ZXN0",  # (unpadded: Go's StdEncoding refuses it)
    b"Basic  dGVzdDp0ZXN0", b"Digest dGVzdDp0ZXN0",
])  # fmt: skip
def test_credentials_that_are_not_basic_ones(value: bytes | None) -> None:
    if value == b"Basic dGVzdDp0ZXN0":
        value = b"Basic dGVzdDp0ZXN"  # (a truncated one)
    assert basic_credentials(value) is None


def test_credentials() -> None:
    assert basic_credentials(b"basic dGVzdDp0OmVzdA==") == ("test", b"t:est")  # first colon
    assert basic_credentials(b"BASIC dGVzdDp0ZXN0") == ("test", b"test")


@given(st.binary(max_size=64))
def test_hostile_authorization_values_never_pass(value: bytes) -> None:
    step = basic_auth({"users": TRAEFIK_USERS}, "f", REF, {})
    answer = step.request(req([(b"Authorization", value)]))
    assert answer is not None
    assert answer.status == 401


@pytest.mark.parametrize("credentials", [
    [], [basic("test", "wrong")], [basic("nobody", "test")], [(b"Authorization", b"Basic %%%")],
    [(b"Authorization", b"Bearer dGVzdDp0ZXN0")],
])  # fmt: skip
def test_refusals_are_401_with_the_realm(credentials: list[tuple[bytes, bytes]]) -> None:
    step = basic_auth({"users": TRAEFIK_USERS, "realm": 'my "realm"'}, "f", REF, {})
    answer = step.request(req(credentials))
    assert isinstance(answer, Answer)
    assert answer.status == 401
    assert dict(answer.headers)[b"WWW-Authenticate"] == b'Basic realm="my \\"realm\\""'
    assert answer.body == b"401 Unauthorized\n"


def test_a_user_passes_and_header_field_and_remove_header_apply() -> None:
    step = basic_auth({"users": TRAEFIK_USERS, "headerField": "X-WebAuth-User",
                       "removeHeader": True}, "f", REF, {})  # fmt: skip
    request = req([basic("test2", "test2"), (b"X-WebAuth-User", b"admin")])  # a spoofed one
    assert step.request(request) is None
    assert request.get(b"x-webauth-user") == b"test2"
    assert request.get(b"authorization") is None


def test_default_realm_is_traefik() -> None:
    answer = basic_auth({"users": TRAEFIK_USERS}, "f", REF, {}).request(req())
    assert answer is not None
    assert dict(answer.headers)[b"WWW-Authenticate"] == (b'Basic realm="traefik"')


def test_users_from_a_secret_and_from_a_basic_auth_secret() -> None:
    secrets = {("default", "authsecret"): secret("authsecret", {"users": "\n".join(TRAEFIK_USERS)
                                                                + "\n\n"}),
               ("default", "basic"): secret("basic", {"username": "ann", "password": "pw"},
                                            "kubernetes.io/basic-auth")}  # fmt: skip
    step = basic_auth({"secret": "authsecret"}, "f", REF, secrets)
    assert step.request(req([basic("test", "test")])) is None
    step = basic_auth({"secret": "basic"}, "f", REF, secrets)
    assert step.request(req([basic("ann", "pw")])) is None
    assert step.request(req([basic("ann", "px")])) is not None


@pytest.mark.parametrize(("secrets", "message"), [
    ({}, "Secret default/authsecret does not exist"),
    ({("default", "authsecret"): secret("authsecret", {"a": "x:y", "b": "x:y"})},
     "has 2 keys"),
    ({("default", "authsecret"): secret("authsecret", {"username": "a"},
                                        "kubernetes.io/basic-auth")}, "both username"),
    ({("default", "authsecret"): secret("authsecret", {"users": ""})}, "no users"),
])  # fmt: skip
def test_secrets_that_cannot_be_used(secrets: dict[Any, Any], message: str) -> None:
    with pytest.raises(FieldError, match=message):
        basic_auth({"secret": "authsecret"}, "spec.basicAuth", REF, secrets)


SHA_TEST = "{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M="  # (the SHA-1 of "test")


@pytest.mark.parametrize(("source", "where"), [
    ({("default", "authsecret"): secret("authsecret", {"users": f"ann\x00x:{SHA_TEST}\n"})},
     "spec.basicAuth.secret: Secret default/authsecret: user 'ann\\x00x'"),
    ({("default", "authsecret"): secret("authsecret", {"username": "ann\r\nX-Admin",
                                                       "password": "pw"},
                                        "kubernetes.io/basic-auth")},
     "spec.basicAuth.secret: Secret default/authsecret: user 'ann\\r\\nX-Admin'"),
    ({"users": [f"bob\nX-Admin:{SHA_TEST}"]}, "spec.basicAuth.users[0]: user 'bob\\nX-"),
])  # fmt: skip
def test_user_names_that_cannot_be_a_header_value(source: dict[Any, Any], where: str) -> None:
    """With `headerField` the user name goes to the backend in a header: a name with CR, LF
    or NUL is a field error naming the Secret or the line, not a header split per request."""
    spec: dict[str, Any] = {"headerField": "X-WebAuth-User"}
    secrets = source if "users" not in source else {}
    spec.update({"users": source["users"]} if "users" in source else {"secret": "authsecret"})
    with pytest.raises(FieldError) as raised:
        basic_auth(spec, "spec.basicAuth", REF, secrets)
    assert str(raised.value).startswith(where)
    assert "CR, LF or NUL" in str(raised.value)
    spec.pop("headerField")  # (without it the name goes nowhere but the comparison)
    basic_auth(spec, "spec.basicAuth", REF, secrets)


def test_a_bcrypt_cost_is_ascii_digits() -> None:
    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    assert htpasswd.valid(good)
    assert not htpasswd.valid(good[:4] + "\u00b9" + good[5:])  # ("¹": a digit to isdigit)
    with pytest.raises(FieldError, match="not a bcrypt"):
        basic_auth({"users": ["u:" + good[:5] + "\u00b9" + good[6:]]}, "f", REF, {})


def test_a_missing_secret_refuses_the_route_naming_both_objects() -> None:
    result = compile_objects([MW("test-auth", {"basicAuth": {"secret": "authsecret"}}),
                              ROUTE("test-auth")])  # fmt: skip
    (refused,) = result.refused
    assert "Middleware default/test-auth is invalid" in str(refused)
    assert "Secret default/authsecret does not exist" in str(refused)
    (error,) = result.errors
    assert error.field == "spec.basicAuth.secret"


def MW(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}  # fmt: skip


def ROUTE(*names: str) -> dict[str, Any]:
    return {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"routes": [{"match": "Host(`a.test`)",
                                 "middlewares": [{"name": n} for n in names],
                                 "services": [{"name": "web", "port": 80}]}]}}  # fmt: skip


def test_a_secret_change_recompiles_the_middleware() -> None:
    from kroute.rules.compile import CompileCache

    cache = CompileCache()
    users = secret("authsecret", {"users": TRAEFIK_USERS[0]})
    objects = [MW("test-auth", {"basicAuth": {"secret": "authsecret"}}), ROUTE("test-auth"), users]
    head = request_from_url("a.test/", headers={"Authorization": basic("test2", "test2")[1]
                                                .decode()})  # fmt: skip
    first = compile_objects(objects, cache=cache)
    assert preview(first.table.match(head), head).status is not None
    objects[2] = secret("authsecret", {"users": TRAEFIK_USERS[1]})
    again = compile_objects(objects, cache=cache)
    assert preview(again.table.match(head), head).upstream is not None


def test_explain_shows_401_and_who_passes() -> None:
    result = compile_objects([MW("test-auth", {"basicAuth": {"users": TRAEFIK_USERS}}),
                              ROUTE("test-auth")])  # fmt: skip
    head = request_from_url("a.test/x")
    shown = preview(result.table.match(head), head).to_json()
    assert shown["status"] == 401
    head = request_from_url("a.test/x", headers={"Authorization": basic("test", "test")[1]
                                                 .decode()})  # fmt: skip
    assert "upstream" in preview(result.table.match(head), head).to_json()


# -- ipAllowList and ipStrategy ----------------------------------------------------------


def test_source_range_v4_and_v6_and_the_peer_by_default() -> None:
    step = ip_allow_list({"sourceRange": ["127.0.0.1/32", "192.168.1.7", "2001:db8::/32"]}, "f")
    assert step.request(req(client="192.168.1.7")) is None
    assert step.request(req(client="2001:db8::5")) is None
    assert step.request(req(client="::ffff:127.0.0.1")) is None  # IPv4-mapped counts as v4
    refused = step.request(req([(b"X-Forwarded-For", b"127.0.0.1")], client="10.0.0.1"))
    assert refused is not None
    assert refused.status == 403
    assert refused.body == b"Forbidden"


def test_reject_status_code() -> None:
    step = ip_allow_list({"sourceRange": ["10.0.0.0/8"], "rejectStatusCode": 404}, "f")
    answer = step.request(req())
    assert answer is not None
    assert (answer.status, answer.body) == (404, b"Not Found")


@pytest.mark.parametrize("spec", [
    {"sourceRange": []}, {"sourceRange": ["10.0.0.300"]}, {"sourceRange": "10.0.0.1"},
    {"sourceRange": ["1.2.3.4"], "ipStrategy": {"depth": -1}},
    {"sourceRange": ["1.2.3.4"], "ipStrategy": {"excludedIPs": ["nope"]}},
    {"sourceRange": ["1.2.3.4"], "unknown": 1},
])  # fmt: skip
def test_invalid_ip_allow_lists(spec: dict[str, Any]) -> None:
    with pytest.raises(FieldError):
        ip_allow_list(spec, "spec.ipAllowList")


XFF = b"10.0.0.1, 11.0.0.1, 12.0.0.1, 13.0.0.1"  # (Traefik's documentation example)


@pytest.mark.parametrize(("depth", "expected"), [(1, "13.0.0.1"), (2, "12.0.0.1"),
                                                 (3, "11.0.0.1"), (4, "10.0.0.1"), (5, "")])  # fmt: skip
def test_depth_counts_from_the_right_without_this_hops_entry(depth: int, expected: str) -> None:
    criterion = source_criterion({"ipStrategy": {"depth": depth}}, "f")
    # A front appends the peer (192.0.2.1) as the last entry; it is not one of the received.
    request = req([(b"X-Forwarded-For", XFF + b", 192.0.2.1")], client="192.0.2.1")
    assert criterion.key(request) == expected
    assert criterion.key(req([(b"X-Forwarded-For", XFF)], client="192.0.2.1")) == expected


@pytest.mark.parametrize("peer", ["10.0.0.5", "::ffff:10.0.0.5", "::ffff:a00:5"])
@pytest.mark.parametrize("client", ["10.0.0.5", "::ffff:10.0.0.5", "::ffff:a00:5"])
def test_this_hops_entry_is_found_in_any_spelling(peer: str, client: str) -> None:
    """A front appends the peer as it got it (`::ffff:10.0.0.5` on a dual-stack listener) but
    may give the steps its parsed form (`::ffff:a00:5`): the entry is still this hop's own, so
    `depth: 1` is the client the trusted proxy saw, never the proxy itself."""
    step = ip_allow_list({"sourceRange": ["10.0.0.0/8"], "ipStrategy": {"depth": 1}}, "f")
    xff = [(b"X-Forwarded-For", b"203.0.113.9, " + peer.encode())]
    assert source_criterion({"ipStrategy": {"depth": 1}}, "f").key(
        req(xff, client=client)) == "203.0.113.9"  # fmt: skip
    assert step.request(req(xff, client=client)) is not None  # (the proxy's 10/8 is not it)


def test_excluded_ips_scan_from_the_right_and_depth_wins() -> None:
    criterion = source_criterion({"ipStrategy": {"excludedIPs": ["12.0.0.1", "13.0.0.0/8"]}}, "f")
    assert criterion.key(req([(b"X-Forwarded-For", XFF)])) == "11.0.0.1"
    both = source_criterion({"ipStrategy": {"depth": 1, "excludedIPs": ["13.0.0.1"]}}, "f")
    assert both.key(req([(b"X-Forwarded-For", XFF)])) == "13.0.0.1"


def test_ipv6_subnet_groups_a_client() -> None:
    criterion = source_criterion({"ipStrategy": {"ipv6Subnet": 64}}, "f")
    assert criterion.key(req(client="2001:db8::1")) == criterion.key(req(client="2001:db8::ff"))
    assert criterion.key(req(client="203.0.113.9")) == "203.0.113.9"


def test_spoofed_forwarded_for_is_ignored_without_a_strategy() -> None:
    step = ip_allow_list({"sourceRange": ["10.0.0.1"]}, "f")
    assert step.request(req([(b"X-Forwarded-For", b"10.0.0.1")], client="203.0.113.9"))


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_depth_refuses_when_the_entry_at_that_depth_is_not_allowed(depth: int) -> None:
    step = ip_allow_list({"sourceRange": ["11.0.0.1"], "ipStrategy": {"depth": depth}}, "f")
    answer = step.request(req([(b"X-Forwarded-For", XFF)]))
    assert (answer is None) == (depth == 3)


def test_source_criteria() -> None:
    assert source_criterion(None, "f").key(req(client="1.2.3.4")) == "1.2.3.4"
    header = source_criterion({"requestHeaderName": "X-Api-Key"}, "f")
    assert header.key(req([(b"x-api-key", b"k1")])) == "k1"
    assert header.key(req()) == ""
    assert source_criterion({"requestHost": True}, "f").key(req()) == "a.test"
    with pytest.raises(FieldError, match="mutually exclusive"):
        source_criterion({"requestHost": True, "requestHeaderName": "X"}, "f")


# -- rateLimit --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_accuracy() -> None:
    """average 100 per 1s, burst 50 (Traefik's example): 50 at once, then one every 10 ms."""
    clock = Clock()
    step = rate_limit({"average": 100, "burst": 50}, "f")
    assert isinstance(step, RateLimit)
    passed = sum(step.request(req(clock=clock)) is None for _ in range(80))
    assert passed == 50
    answer = step.request(req(clock=clock))
    assert answer is not None
    assert answer.status == 429
    headers = dict(answer.headers)
    assert headers[b"Retry-After"] == b"1"
    assert headers[b"X-Retry-In"] == b"10ms"
    clock.now += 1.0  # a second refills 100 tokens, capped at the burst
    assert sum(step.request(req(clock=clock)) is None for _ in range(80)) == 50
    for _ in range(200):  # then exactly the rate: one token per 10 ms
        clock.now += 0.01
        assert step.request(req(clock=clock)) is None
        assert step.request(req(clock=clock)) is not None


def test_period_and_low_rates() -> None:
    clock = Clock()
    step = rate_limit({"average": 6, "period": "1m", "burst": 1}, "f")  # one per 10 s
    assert step.request(req(clock=clock)) is None
    answer = step.request(req(clock=clock))
    assert answer is not None
    assert dict(answer.headers)[b"Retry-After"] == b"10"
    clock.now += 9.9
    assert step.request(req(clock=clock)) is not None
    clock.now += 0.1
    assert step.request(req(clock=clock)) is None


def test_sources_have_their_own_buckets_and_average_zero_is_no_limit() -> None:
    clock = Clock()
    step = rate_limit({"average": 1, "burst": 1}, "f")
    assert step.request(req(client="1.1.1.1", clock=clock)) is None
    assert step.request(req(client="2.2.2.2", clock=clock)) is None
    assert step.request(req(client="1.1.1.1", clock=clock)) is not None
    unlimited = rate_limit({"average": 0, "burst": 1}, "f")
    assert all(unlimited.request(req(clock=clock)) is None for _ in range(100))


def test_memory_is_bounded_with_100000_sources() -> None:
    clock = Clock()
    step = rate_limit({"average": 1, "period": "1h", "burst": 1}, "f")
    assert isinstance(step, RateLimit)
    for i in range(100_000):
        assert step.request(req(client=f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}",
                                clock=clock)) is None  # fmt: skip
        assert len(step.buckets) <= MAX_SOURCES
    assert len(step.buckets) == MAX_SOURCES
    # The most recent sources are remembered (limited); the oldest were evicted.
    assert step.request(req(client="10.1.134.159", clock=clock)) is not None  # i = 99,999
    assert step.request(req(client="10.0.0.0", clock=clock)) is None


def test_buckets_keep_the_least_recently_used_out() -> None:
    buckets = Buckets(rate=1.0, burst=1, limit=2)
    assert buckets.take(b"a", 0.0) == 0.0
    assert buckets.take(b"b", 0.0) == 0.0
    assert buckets.take(b"a", 0.0) > 0  # a is used again: b is now the oldest
    assert buckets.take(b"c", 0.0) == 0.0
    assert len(buckets) == 2
    assert buckets.take(b"a", 0.0) > 0  # a kept; b evicted
    assert buckets.take(b"b", 0.0) == 0.0


def test_durations_and_bad_rate_limits() -> None:
    clock = Clock()
    for period, seconds in (("1m30s", 90), (5, 5), ("500ms", 0.5), ("42", 42), ("1.5h", 5400)):
        step = rate_limit({"average": 1, "period": period}, "f")
        assert step.request(req(clock=clock)) is None
        answer = step.request(req(clock=clock))
        assert answer is not None
        assert dict(answer.headers)[b"X-Retry-In"] == go_duration(seconds).encode()
    assert go_duration(90.0) == "1m30s"
    assert go_duration(1.5) == "1.5s"
    for spec in ({"average": -1}, {"average": 1, "period": "-1s"}, {"average": 1, "period": "x"},
                 {"average": 1, "sourceCriterion": {"requestHost": "yes"}}):  # fmt: skip
        with pytest.raises(FieldError):
            rate_limit(spec, "spec.rateLimit")


@pytest.mark.parametrize(
    "period",
    ["9" * 400 + "h", "99999999999h", "1" * 30, 10**400],
    ids=["400-digits-h", "11-digits-h", "30-digits", "int-10e400"],
)
def test_a_period_too_long_is_a_field_error(period: object) -> None:
    """An endless period would make the rate 0 (a division by zero on every request): the
    period is bounded (ten years) and the Middleware refused, naming the field."""
    with pytest.raises(FieldError, match=r"spec\.rateLimit\.period"):
        rate_limit({"average": 1, "period": period}, "spec.rateLimit")


@pytest.mark.parametrize("criterion", [{"requestHeaderName": "X-Tenant"}, {"requestHost": True}])
def test_a_source_costs_the_same_whatever_its_size(criterion: dict[str, Any]) -> None:
    """Sources are kept as 16-byte digests: 2,000 sources of 28 KB each (under the fronts'
    header limit) cost what 2,000 addresses do, not 56 MB; different values stay apart."""
    clock = Clock()
    step = rate_limit({"average": 1, "period": "1h", "burst": 1, "sourceCriterion": criterion},
                      "f")  # fmt: skip
    assert isinstance(step, RateLimit)
    name = b"X-Tenant" if "requestHeaderName" in criterion else b"Host"

    def sent(value: bytes) -> UpstreamRequest:
        return UpstreamRequest("GET", "/", None, [(name, value)], "/", clock=clock)

    values = [(b"%08d" % i) * 3500 for i in range(2000)]
    tracemalloc.start()
    try:
        for value in values:
            assert step.request(sent(value)) is None
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(step.buckets) == 2000
    assert used / 2000 < 1024  # (bytes a source; the value itself is 28,000)
    assert step.request(sent(values[7])) is not None  # the same source, still limited


def test_rate_limit_needs_the_front_clock() -> None:
    step = rate_limit({"average": 1}, "f")
    with pytest.raises(RuntimeError, match="clock"):
        step.request(req())


def test_explain_does_not_count_a_rate_limit() -> None:
    result = compile_objects([MW("rl", {"rateLimit": {"average": 1, "burst": 1}}), ROUTE("rl")])
    head = request_from_url("a.test/x")
    for _ in range(3):
        shown = preview(result.table.match(head), head).to_json()
        assert "upstream" in shown
        assert shown["not_run"] == [
            "RateLimit (spec.routes[0].middlewares[0]: Middleware default/rl)"
        ]


# -- inFlightReq ------------------------------------------------------------------------


def test_in_flight_counts_until_the_end() -> None:
    step = in_flight({"amount": 2}, "f")
    assert isinstance(step, InFlight)
    from kroute.pipeline.steps import Chain

    chain = Chain((step,))
    first, second, third = req(), req(), req(client="198.51.100.1")
    assert step.request(first) is None
    assert step.request(second) is None
    refused = req()
    answer = step.request(refused)
    assert answer is not None
    assert answer.status == 429
    assert step.request(third) is None  # another source
    run_end(chain, refused)  # (not counted: nothing to give back)
    run_end(chain, first)
    run_end(chain, first)  # (once only)
    assert step.counts == {digest("203.0.113.9"): 1, digest("198.51.100.1"): 1}
    assert step.request(req()) is None
    for request in (second, third):
        run_end(chain, request)
    assert step.counts == {digest("203.0.113.9"): 1}


def digest(client: str) -> bytes:
    return source_criterion(None, "f").digest(req(client=client))


def test_in_flight_keeps_digests_of_sources() -> None:
    """A header value of 28 KB counts under its 16-byte digest, as rateLimit's sources."""
    step = in_flight({"amount": 1, "sourceCriterion": {"requestHeaderName": "X-Tenant"}}, "f")
    assert isinstance(step, InFlight)
    big = [(b"X-Tenant", b"t" * 28_000)]
    assert step.request(req(big)) is None
    assert step.request(req(big)) is not None
    assert step.request(req([(b"X-Tenant", b"t" * 27_999)])) is None
    assert [len(k) for k in step.counts] == [16, 16]


def test_in_flight_needs_an_amount() -> None:
    with pytest.raises(FieldError, match="required"):
        in_flight({}, "spec.inFlightReq")


def test_ip_white_list_is_still_read() -> None:
    compiled = compile_middleware(MW("old", {"ipWhiteList": {"sourceRange": ["10.0.0.0/8"]}}),
                                  ObjectRef("Middleware", "default", "old"), False)  # fmt: skip
    assert compiled.error is None
    assert compiled.steps[0].request(req()) is not None
