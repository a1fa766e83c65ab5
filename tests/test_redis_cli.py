"""The redis-cli path: a job pushed straight into the stream, through the same schema."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from stack import SEED

pytestmark = pytest.mark.integration


def redis_cli(stack, *args: str) -> str:
    """Run the real redis-cli when it is installed, else the same command through redis-py."""
    url = stack.settings.redis_url
    cli = shutil.which("redis-cli")
    if cli:
        out = subprocess.run([cli, "-u", url, *args], capture_output=True, text=True, check=True,
                             timeout=10)
        return out.stdout.strip()
    return str(stack.redis.execute_command(*args))


def test_xadd_job_becomes_a_callback_readable_from_redis(stack) -> None:
    request = json.dumps({**SEED, "leg_B": {**SEED["leg_B"], "route": "ring"}})
    entry = redis_cli(stack, "XADD", "fsctl:jobs", "*", "request", request)
    assert "-" in entry
    callback_id = None
    for _ in range(100):
        callback_id = stack.redis.get(f"fsctl:job:{entry}")
        if callback_id:
            break
        import gevent

        gevent.sleep(0.05)
    assert callback_id, "the job's callback id is discoverable"
    rec = stack.wait_for(callback_id, "bridged", timeout_s=5)
    raw = json.loads(redis_cli(stack, "GET", f"fsctl:callback:{callback_id}"))
    assert raw["id"] == callback_id and raw["job_id"] == entry
    assert raw["legs"]["A"]["to"] == "1000123"
    stack.kill(rec["legs"]["A"]["uuid"])
    stack.wait_for(callback_id, "completed")


@pytest.mark.parametrize("fields,needle", [
    (["request", '{"leg_A": {"to": "1000123"}}'], "leg_B"),
    (["request", "not json"], "invalid request"),
    (["request", '{"leg_A": {"to": "1 2"}, "leg_B": {"to": "1000125"}}'], "leg_A"),
    (["request", '["x"]'], "object"),
    (["something", "else"], "neither"),
    (["callback_id", "f" * 32], "no callback record"),
])
def test_invalid_job_goes_to_dead_letter_with_reason(stack, fields: list[str], needle: str) -> None:
    entry = redis_cli(stack, "XADD", "fsctl:jobs", "*", *fields)
    import gevent

    for _ in range(100):
        dead = stack.redis.xrange("fsctl:jobs:dead")
        if dead:
            break
        gevent.sleep(0.05)
    assert len(dead) == 1
    item = dead[0][1]
    assert item["entry_id"] == entry and needle in item["reason"]
    assert json.loads(item["payload"]) == dict(zip(fields[::2], fields[1::2], strict=True))
    assert stack.redis.xpending("fsctl:jobs", "workers")["pending"] == 0
    assert stack.redis.zcard("fsctl:callbacks") == 0


@pytest.mark.freeswitch
def test_redis_cli_jobs_count_against_the_apis_destination_limit(redis_url: str) -> None:
    """'whoever asks': three jobs for one number under a limit of 2 — two callbacks, the
    third dead-lettered with the reason; the API then refuses that number as well (one counter)."""
    import gevent
    from stack import Stack
    from support import esl_target

    stack = Stack(redis_url, esl_target(), dest_max_per_hour=2)
    try:
        request = json.dumps({"leg_A": {"to": "1000123", "route": "busy"},
                              "leg_B": {"to": "1000125"}})
        entries = [redis_cli(stack, "XADD", "fsctl:jobs", "*", "request", request)
                   for _ in range(3)]
        for _ in range(200):
            made = [stack.redis.get(f"fsctl:job:{e}") for e in entries]
            dead = stack.redis.xrange("fsctl:jobs:dead")
            if sum(1 for m in made if m) + len(dead) == 3:
                break
            gevent.sleep(0.05)
        assert [bool(m) for m in made] == [True, True, False], made
        assert len(dead) == 1 and dead[0][1]["entry_id"] == entries[2], dead
        assert dead[0][1]["reason"] == "refused: dest limit: 1000123 was called 2 times this hour"
        for callback_id in made[:2]:
            assert stack.wait_for(callback_id, "failed")["outcome"] == "a_busy"
        code, reply, _ = stack.http("POST", "/voice/call/callback",
                                    {"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000999"}})
        assert code == 429 and reply["errors"]["limit"] == "dest", reply
        # B (1000125) was never rung: its counts were given back, as for API requests
        assert stack.redis.get("fsctl:dest:1000125") in (None, "0")
    finally:
        stack.close()
