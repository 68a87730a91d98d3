"""Challenge parsing, token responses and the token cache, with a hand-driven clock."""

from __future__ import annotations

import pytest

from mirror.auth import (
    Challenge,
    TokenCache,
    TokenKey,
    parse_challenge,
    parse_token_response,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bearer_challenge_with_commas_in_quoted_scope() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull,push"'
    )
    assert parse_challenge(header) == Challenge(
        "bearer",
        {
            "realm": "https://auth.docker.io/token",
            "service": "registry.docker.io",
            "scope": "repository:library/alpine:pull,push",
        },
    )


def test_challenge_scheme_and_names_are_case_insensitive_and_spacing_is_free() -> None:
    challenge = parse_challenge('BEARER Realm = "https://a/token" , Service=reg,error="x\\"y"')
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://a/token"
    assert challenge.service == "reg"
    assert challenge.params["error"] == 'x"y'


def test_basic_challenge() -> None:
    assert parse_challenge('Basic realm="Registry Realm"') == Challenge(
        "basic", {"realm": "Registry Realm"}
    )
    assert parse_challenge("Basic") == Challenge("basic", {})


@pytest.mark.parametrize("header", ["", "   ", 'Bearer realm="unterminated', "Bearer =x"])
def test_malformed_challenges_are_none(header: str) -> None:
    assert parse_challenge(header) is None


def test_token_response_fields_and_default_lifetime() -> None:
    assert parse_token_response(b'{"token": "t", "expires_in": 300}') == ("t", 300.0)
    assert parse_token_response(b'{"access_token": "a"}') == ("a", 60.0)
    assert parse_token_response(b'{"token": "t", "expires_in": "soon"}') == ("t", 60.0)


@pytest.mark.parametrize("body", [b"<html>", b"[]", b'{"expires_in": 60}', b'{"token": ""}'])
def test_token_response_without_token_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_token_response(body)


KEY = TokenKey("https://auth/token", "svc", "repository:library/alpine:pull")


async def test_token_is_cached_per_scope() -> None:
    cache = TokenCache(clock=Clock())
    await cache.put(KEY, "alpine-token", 300)
    assert await cache.get(KEY) == "alpine-token"
    nginx = TokenKey(KEY.realm, KEY.service, "repository:library/nginx:pull")
    assert await cache.get(nginx) is None
    assert await cache.get(TokenKey(KEY.realm, "other-svc", KEY.scope)) is None


async def test_token_is_dropped_a_margin_before_it_expires() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    await cache.put(KEY, "t", 300)  # margin: 10% of 300 s, capped at 30 s
    clock.now += 269
    assert await cache.get(KEY) == "t"
    clock.now += 1
    assert await cache.get(KEY) is None


async def test_short_lived_token_margin_is_a_tenth_of_its_life() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    await cache.put(KEY, "t", 60)
    clock.now += 53.9
    assert await cache.get(KEY) == "t"
    clock.now += 0.2
    assert await cache.get(KEY) is None


async def test_put_replaces_the_token_for_a_scope() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    await cache.put(KEY, "old", 60)
    clock.now += 100
    await cache.put(KEY, "new", 60)
    assert await cache.get(KEY) == "new"


async def test_token_without_lifetime_is_not_stored() -> None:
    cache = TokenCache(clock=Clock())
    await cache.put(KEY, "t", 0)
    assert await cache.get(KEY) is None
