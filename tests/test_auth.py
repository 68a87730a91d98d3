"""Challenge parsing, token responses and the token cache, with a hand-driven clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiocache import SimpleMemoryCache

from mirror.auth import (
    Challenge,
    TokenCache,
    TokenKey,
    basic_authorization,
    parse_challenge,
    parse_token_response,
    pick_challenge,
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


def test_pick_challenge_prefers_bearer_then_basic() -> None:
    bearer = 'Bearer realm="https://a/token",service="reg"'
    assert pick_challenge(['Basic realm="r"', bearer]) == parse_challenge(bearer)
    assert pick_challenge(['Negotiate', 'Basic realm="r"']) == Challenge("basic", {"realm": "r"})
    assert pick_challenge(["Negotiate", 'Bearer realm="unterminated']) is None
    assert pick_challenge([]) is None


def test_basic_authorization() -> None:
    assert basic_authorization("alice", "s3cret") == "Basic YWxpY2U6czNjcmV0"
    assert basic_authorization("alice", None) == "Basic YWxpY2U6"
    assert basic_authorization(None, "s3cret") is None
    assert basic_authorization("", "s3cret") is None


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


class Lookups(SimpleMemoryCache):  # type: ignore[misc]
    """An in-memory token backend that says when `callers` lookups have been answered.

    A caller goes on from its lookup into the shared fetch without yielding, so once
    every caller's lookup is answered, every caller waits on that fetch (or, without
    sharing, has started its own).
    """

    def __init__(self, callers: int) -> None:
        super().__init__(timeout=None)
        self.callers = callers
        self.answered = 0
        self.all_answered = asyncio.Event()

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        value = await super().get(*args, **kwargs)
        self.answered += 1
        if self.answered >= self.callers:
            self.all_answered.set()
        return value


class Realm:
    """A token endpoint stand-in: counts fetches, hands out token-1, token-2, ... on release."""

    def __init__(self, expires_in: float = 300) -> None:
        self.fetches = 0
        self.expires_in = expires_in
        self.gate = asyncio.Event()
        self.error: Exception | None = None

    async def fetch(self) -> tuple[str, float]:
        self.fetches += 1
        number = self.fetches
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return f"token-{number}", self.expires_in


async def test_concurrent_callers_share_one_fetch() -> None:
    lookups, realm = Lookups(20), Realm()
    cache = TokenCache(clock=Clock(), cache=lookups)
    callers = [asyncio.create_task(cache.token(KEY, realm.fetch)) for _ in range(20)]
    await lookups.all_answered.wait()
    realm.gate.set()
    assert await asyncio.gather(*callers) == ["token-1"] * 20
    assert realm.fetches == 1
    assert await cache.token(KEY, realm.fetch) == "token-1"
    assert realm.fetches == 1


async def test_each_scope_gets_its_own_fetch() -> None:
    cache, realm = TokenCache(clock=Clock()), Realm()
    realm.gate.set()
    nginx = TokenKey(KEY.realm, KEY.service, "repository:library/nginx:pull")
    tokens = await asyncio.gather(cache.token(KEY, realm.fetch), cache.token(nginx, realm.fetch))
    assert sorted(tokens) == ["token-1", "token-2"]
    assert await cache.get(nginx) in tokens


async def test_a_refused_token_is_replaced_once_for_all_who_were_refused() -> None:
    cache, realm = TokenCache(clock=Clock()), Realm()
    realm.gate.set()
    assert await cache.token(KEY, realm.fetch) == "token-1"
    refused = [cache.token(KEY, realm.fetch, refused="token-1") for _ in range(5)]
    assert await asyncio.gather(*refused) == ["token-2"] * 5
    assert await cache.token(KEY, realm.fetch, refused="token-1") == "token-2"
    assert realm.fetches == 2
    assert await cache.get(KEY) == "token-2"


async def test_a_failed_fetch_reaches_every_caller_and_is_not_cached() -> None:
    lookups, realm = Lookups(3), Realm()
    cache = TokenCache(clock=Clock(), cache=lookups)
    realm.error = RuntimeError("realm down")
    callers = [asyncio.create_task(cache.token(KEY, realm.fetch)) for _ in range(3)]
    await lookups.all_answered.wait()
    realm.gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert [str(result) for result in results] == ["realm down"] * 3
    realm.error = None
    assert await cache.token(KEY, realm.fetch) == "token-2"


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch() -> None:
    lookups, realm = Lookups(2), Realm()
    cache = TokenCache(clock=Clock(), cache=lookups)
    first = asyncio.create_task(cache.token(KEY, realm.fetch))
    second = asyncio.create_task(cache.token(KEY, realm.fetch))
    await lookups.all_answered.wait()
    first.cancel()
    realm.gate.set()
    assert await second == "token-1"
    assert first.cancelled()
    assert realm.fetches == 1
