"""ACME's pure parts: resolvers' text form, which certificates the routes ask for, when to renew
and how to back off, and HTTP-01 answers (kroute.acme)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kroute.acme.http01 import Http01Challenges
from kroute.acme.plan import LISTENER_OPTION, plan_certificates, secret_name
from kroute.acme.resolvers import Resolver
from kroute.acme.responder import CHALLENGES_SECRET, SharedChallenges
from kroute.acme.schedule import (
    Action,
    Attempts,
    RenewalPolicy,
    next_step,
    renewal_time,
)
from kroute.acme.store import MemoryStore
from kroute.rules.compile import compile_objects

LE = "https://acme-staging-v02.api.letsencrypt.org/directory"
RESOLVERS = {"le": Resolver("le", LE, "admin@example.com")}
ANNOTATION = "traefik.ingress.kubernetes.io/router.tls.certresolver"
T0 = datetime.datetime(2026, 12, 6, tzinfo=datetime.UTC)


def ingress(name: str, *hosts: str, resolver: str | None = "le",
            tls: list[list[str]] | None = None) -> dict[str, Any]:  # fmt: skip
    annotations = {ANNOTATION: resolver} if resolver else {}
    spec: dict[str, Any] = {
        "ingressClassName": "kroute",
        "rules": [{"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
            "service": {"name": "web", "port": {"number": 80}}}}]}} for h in hosts],
    }  # fmt: skip
    if tls is not None:
        spec["tls"] = [{"hosts": entry} for entry in tls]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": spec}  # fmt: skip


def ingress_route(name: str, match: str, tls: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"routes": [{"match": match, "kind": "Rule",
                                 "services": [{"name": "web", "port": 80}]}], "tls": tls}}  # fmt: skip


def gateway(hostname: str | None, resolver: str = "le", protocol: str = "HTTPS") -> dict[str, Any]:
    listener: dict[str, Any] = {"name": "https", "port": 443, "protocol": protocol,
                                "tls": {"options": {LISTENER_OPTION: resolver}}}  # fmt: skip
    if hostname:
        listener["hostname"] = hostname
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "default"},
            "spec": {"gatewayClassName": "kroute", "listeners": [listener]}}  # fmt: skip


# -- resolvers -----------------------------------------------------------------------------------


def test_resolver_text_form_and_its_errors() -> None:
    resolver = Resolver.parse(f"le={LE},email=a@example.com,profile=shortlived,ca=/tmp/ca.pem")
    assert (resolver.name, resolver.challenge, resolver.entry_point) == ("le", "http-01", "web")
    assert (resolver.profile, resolver.ca_bundle, resolver.key_type) == (
        "shortlived", "/tmp/ca.pem", "EC256")  # fmt: skip
    alpn = Resolver.parse(f"le={LE},email=a@example.com,challenge=tls-alpn-01")
    assert alpn.entry_point == "websecure"
    for text, says in [
        ("le", "expected NAME=DIRECTORY_URL"),
        (f"le={LE}", "email=''"),
        ("le=http://ca.test/dir,email=a@b.c", "is not an https:// URL"),
        (f"le={LE},email=a@b.c,challenge=dns-01", "challenge='dns-01' is not one of"),
        (f"le={LE},email=a@b.c,keytype=DSA", "keytype='DSA'"),
        (f"le={LE},email=a@b.c,colour=red", "'colour=red' is not one of"),
        (f"le={LE},email=a@b.c,email=d@e.f", "email given twice"),
        (f"Le={LE},email=a@b.c", "a resolver name is lower-case"),
    ]:
        with pytest.raises(ValueError, match=says):
            Resolver.parse(text)


# -- planning ------------------------------------------------------------------------------------


def test_an_ingress_asks_per_tls_entry_or_for_its_rule_hosts() -> None:
    plan = plan_certificates([
        ingress("rules", "b.example.com", "a.example.com"),
        ingress("entries", "x.example.com", tls=[["x.example.com"], ["y.example.com", "z.example.com"]]),
        ingress("none", "n.example.com", resolver=None),
        ingress("other-class", "o.example.com") | {"spec": {"ingressClassName": "nginx"}},
    ], RESOLVERS)  # fmt: skip
    assert [r.names for r in plan.requests] == [
        ("a.example.com", "b.example.com"), ("x.example.com",), ("y.example.com", "z.example.com"),
    ]  # fmt: skip
    assert plan.errors == ()
    assert plan.requests[0].wanted_by == ("Ingress default/rules",)


def test_one_certificate_for_one_set_of_names_asked_twice() -> None:
    plan = plan_certificates(
        [ingress("a", "www.example.com"), ingress("b", "www.example.com"),
         ingress_route("c", "Host(`www.example.com`)", {"certResolver": "le"})], RESOLVERS,
    )  # fmt: skip
    (request,) = plan.requests
    assert request.wanted_by == ("Ingress default/a", "Ingress default/b",
                                 "IngressRoute default/c")  # fmt: skip
    assert request.secret_name == secret_name("le", ["www.example.com"])


def test_ingress_routes_domains_and_rule_hosts() -> None:
    plan = plan_certificates([
        ingress_route("domains", "Host(`ignored.example.com`)", {"certResolver": "le", "domains": [
            {"main": "main.example.com", "sans": ["san.example.com"]}]}),
        ingress_route("rule", "(Host(`a.example.com`) || Host(`b.example.com`)) && "
                      "!Host(`not.example.com`) && PathPrefix(`/x`)", {"certResolver": "le"}),
        ingress_route("plain", "Host(`p.example.com`)", {"secretName": "p"}),
    ], RESOLVERS)  # fmt: skip
    assert [r.names for r in plan.requests] == [
        ("a.example.com", "b.example.com"),
        ("main.example.com", "san.example.com"),
    ]
    assert plan.errors == ()


def test_gateway_listener_option() -> None:
    plan = plan_certificates([gateway("gw.example.com")], RESOLVERS)
    assert [r.names for r in plan.requests] == [("gw.example.com",)]
    assert plan.requests[0].wanted_by == ("Gateway default/gw listener https",)
    other = gateway("gw.example.com") | {"spec": {**gateway("x")["spec"],
                                                   "gatewayClassName": "other"}}  # fmt: skip
    assert plan_certificates([other], RESOLVERS).requests == ()


def test_what_can_never_be_issued_is_reported_per_object() -> None:
    plan = plan_certificates([
        ingress("wild", "*.example.com"),
        ingress("unknown", "u.example.com", resolver="zerossl"),
        ingress("hostless"),
        ingress("bad-host", tls=[["not a host"]]),
        gateway(None),
        gateway("http.example.com", protocol="HTTP"),
        ingress("fine", "fine.example.com"),
    ], RESOLVERS)  # fmt: skip
    assert [r.names for r in plan.requests] == [("fine.example.com",)]
    errors = [str(e) for e in plan.errors]
    assert any("default/wild" in e and "DNS-01" in e for e in errors)
    assert any("default/unknown" in e and "'zerossl' is not configured (le)" in e for e in errors)
    assert any("default/hostless" in e and "no host name" in e for e in errors)
    assert any("default/bad-host" in e and "spec.tls[0].hosts[0]" in e for e in errors)
    assert any("listener https" in e and "no host name" in e for e in errors)
    assert any("needs protocol HTTPS" in e for e in errors)
    assert len(errors) == 6


def test_the_annotation_routes_on_tls_entry_points_as_traefik_does() -> None:
    result = compile_objects([ingress("a", "a.example.com")])
    (route,) = result.table.routes
    assert route.attachment is not None
    assert route.attachment.tls
    assert result.refused == ()  # (the annotation is applied, not refused)
    both = ingress("b", "b.example.com")
    both["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.tls"] = "false"
    (route,) = compile_objects([both]).table.routes
    assert route.attachment is None  # (served on every entry point, as asked)


names = st.lists(st.from_regex(r"[a-z]{1,8}\.example\.com", fullmatch=True), min_size=1,
                 max_size=5)  # fmt: skip


@given(st.lists(names, min_size=1, max_size=6), st.randoms())
def test_planning_depends_on_the_sets_of_names_not_on_object_order(
    sets: list[list[str]], rng: Any
) -> None:
    objects = [ingress(f"i{i}", *hosts) for i, hosts in enumerate(sets)]
    shuffled = list(objects)
    rng.shuffle(shuffled)
    plan, again = plan_certificates(objects, RESOLVERS), plan_certificates(shuffled, RESOLVERS)
    assert [r.names for r in plan.requests] == [r.names for r in again.requests]
    assert {r.names for r in plan.requests} == {tuple(sorted(set(s))) for s in sets}
    assert len({r.secret_name for r in plan.requests}) == len(plan.requests)
    assert all(len(r.secret_name) <= 63 for r in plan.requests)


# -- schedule ------------------------------------------------------------------------------------


def test_renewal_a_third_of_the_lifetime_before_expiry_or_in_the_ari_window() -> None:
    policy = RenewalPolicy()
    end = T0 + datetime.timedelta(days=90)
    assert renewal_time(T0, end, policy) == T0 + datetime.timedelta(days=60)
    window = (T0 + datetime.timedelta(days=10), T0 + datetime.timedelta(days=12))
    assert renewal_time(T0, end, policy, window=window, draw=0.5) == T0 + datetime.timedelta(
        days=11
    )


@given(st.integers(1, 40), st.floats(0, 1, exclude_max=True))
def test_backoff_grows_and_stays_under_the_cap(failures: int, draw: float) -> None:
    policy = RenewalPolicy(retry_initial=60, retry_cap=3600)
    delay = policy.retry_delay(failures, draw)
    assert 60 <= delay <= 3600
    assert delay >= min(policy.retry_delay(failures - 1, 0), 3600) if failures > 1 else True


def test_failures_back_off_permanent_ones_stop() -> None:
    policy = RenewalPolicy(retry_initial=60, jitter=0)
    attempts = Attempts().failed(T0, "unauthorized", "wrong body", policy, 0.0)
    assert attempts.retry_at == T0 + datetime.timedelta(seconds=60)
    assert next_step(T0, None, attempts).action is Action.WAIT
    attempts = attempts.failed(T0, "connection", "refused", policy, 0.0, retry_after=600)
    assert attempts.retry_at == T0 + datetime.timedelta(seconds=600)  # (the server's wait)
    later = T0 + datetime.timedelta(seconds=601)
    assert next_step(later, None, attempts).action is Action.ISSUE
    blocked = attempts.failed(later, "rejectedIdentifier", "blocked", policy, 0.0)
    assert blocked.permanent
    assert blocked.last_error == "blocked"
    assert next_step(later + datetime.timedelta(days=365), None, blocked).action is Action.GIVE_UP


@given(st.integers(0, 200), st.integers(0, 200))
def test_next_step_never_orders_before_renewal_is_due(now_day: int, renew_day: int) -> None:
    now = T0 + datetime.timedelta(days=now_day)
    renew_at = T0 + datetime.timedelta(days=renew_day)
    step = next_step(now, renew_at, Attempts())
    assert (step.action is Action.RENEW) == (now >= renew_at)
    if step.action is Action.WAIT:
        assert step.at == renew_at


# -- HTTP-01 -------------------------------------------------------------------------------------


def test_http01_answers_registered_tokens_only() -> None:
    challenges = Http01Challenges()
    challenges.add("tok-1", "tok-1.thumb")
    challenges.share({"tok-2": "tok-2.thumb"})
    answer = challenges.answer("GET", "/.well-known/acme-challenge/tok-1")
    assert answer is not None
    assert (answer.status_hint, answer.body) == (200, b"tok-1.thumb")
    shared = challenges.answer("HEAD", "/.well-known/acme-challenge/tok-2?x")
    assert shared is not None
    assert shared.body == b"tok-2.thumb"
    for method, target in [("GET", "/.well-known/acme-challenge/other"), ("POST",
                           "/.well-known/acme-challenge/tok-1"), ("GET", "/tok-1")]:  # fmt: skip
        assert challenges.answer(method, target) is None
    challenges.remove("tok-1")
    assert challenges.answer("GET", "/.well-known/acme-challenge/tok-1") is None


# -- challenges shared by the leader through the store --------------------------------------------


class Registry:
    """Stands in for the TLS fronts' AlpnChallenges."""

    def __init__(self) -> None:
        self.pending: dict[str, str] = {}

    def add(self, domain: str, key_authorization: str) -> None:
        self.pending[domain] = key_authorization

    def remove(self, domain: str) -> None:
        self.pending.pop(domain, None)


@pytest.mark.anyio
async def test_the_leaders_challenges_reach_every_replica_through_the_store() -> None:
    store = MemoryStore()
    leader = SharedChallenges(store, Http01Challenges(), Registry())
    replica_alpn = Registry()
    replica = SharedChallenges(store, Http01Challenges(), replica_alpn)
    store.subscribe(lambda: replica.follow(store.secrets()))
    await leader.present("http-01", "a.example.com", "tok", "tok.thumb")
    await leader.present("tls-alpn-01", "b.example.com", "", "alpn.thumb")
    answer = replica.http01.answer("GET", "/.well-known/acme-challenge/tok")
    assert answer is not None
    assert answer.body == b"tok.thumb"
    assert replica_alpn.pending == {"b.example.com": "alpn.thumb"}
    await leader.cleanup("http-01", "a.example.com", "tok")
    await leader.cleanup("tls-alpn-01", "b.example.com", "")
    assert replica.http01.answer("GET", "/.well-known/acme-challenge/tok") is None
    assert replica_alpn.pending == {}
    assert store.secrets()[CHALLENGES_SECRET]["data"] == {}
