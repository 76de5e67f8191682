"""The lab's answer cache: a real ``redis-server`` (Debian's, which ``make system-deps`` installs) shared by two
gateway processes' caches; a Redis that does not answer is a miss, never a failed request."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time

import pytest

from pipelines.gateway.limits import RedisCache, open_cache

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path):
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = _free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:  # waiting for the port, not timing it
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(30)


def test_two_gateways_share_answers_through_redis_and_entries_expire(redis_url):
    async def run() -> tuple[object, object, int]:
        one, two = open_cache(redis_url, ttl_s=120), RedisCache(redis_url, ttl_s=120)
        assert isinstance(one, RedisCache)
        await one.put("cbnano:answer:k", {"choices": [{"message": {"content": "Ceria."}}]})
        seen = await two.get("cbnano:answer:k"), await two.get("cbnano:answer:other")
        ttl = await two.redis.ttl("cbnano:answer:k")
        await one.redis.aclose()
        await two.redis.aclose()
        return seen[0], seen[1], ttl

    hit, miss, ttl = asyncio.run(run())
    assert hit == {"choices": [{"message": {"content": "Ceria."}}]} and miss is None and 0 < ttl <= 120


def test_a_redis_that_does_not_answer_is_a_miss():
    async def run() -> object:
        cache = RedisCache(f"redis://127.0.0.1:{_free_port()}/0")
        await cache.put("k", {"x": 1})  # nothing listens there: no error
        return await cache.get("k")

    assert asyncio.run(run()) is None
