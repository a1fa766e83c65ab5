"""Status webhooks: signed, ordered, retried, dead-lettered and replayed, 410 honoured, the
SSRF guard, a sender killed mid-way, and call control never waiting for a receiver. Real
redis-server, the simulator over TCP, real HTTP receivers on 127.0.0.1 (no other address is
ever contacted: refused URLs are literal addresses or ``localhost``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hookrecv import Receiver, wait_until
from procs import kill_group, terminate_group
from prometheus_client.parser import text_string_to_metric_families
from stack import SEED, Stack
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from support import REPO, report

from fsctl import settings as settings_mod
from fsctl.errors import ConfigError, UrlRefused
from fsctl.model import Callback
from fsctl.store import Store, connect
from fsctl.webhooks.events import Milestone, milestones
from fsctl.webhooks.guard import address_problem, check_url
from fsctl.webhooks.payload import body_parts
from fsctl.webhooks.sender import Sender
from fsctl.webhooks.signing import new_secret, parse_secrets

pytestmark = pytest.mark.integration

NEW, OLD = new_secret(), new_secret()
"""Generated for this run (never in the repository): the new and the old secret of a rotation."""
FAST = {"webhook_secrets": (NEW,), "webhook_allow_private": True, "webhook_timeout_s": 2.0,
        "webhook_backoff_base_s": 0.05, "webhook_backoff_max_s": 0.2, "webhook_max_attempts": 3}
"""Webhooks on, loopback allowed (the receivers are on 127.0.0.1), quick retries."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def make_stack(redis_url: str, worker: bool = False, **overrides: Any) -> Stack:
    return Stack(redis_url, None, start_worker=worker, **{**FAST, **overrides})


@pytest.fixture
def api(redis_url: str) -> Iterator[Stack]:
    """API only (no worker): a callback cancelled while queued gives queued + cancelled."""
    s = make_stack(redis_url)
    try:
        yield s
    finally:
        s.close()


def start_sender(stack: Stack, **overrides: Any) -> Sender:
    import dataclasses

    return Sender(dataclasses.replace(stack.settings, **overrides), connect(stack.settings.redis_url)
                  ).start()


def queued_then_cancelled(stack: Stack, url: str, **extra: Any) -> str:
    cb = stack.create({**SEED, "status_callback": url, **extra})
    code, reply, _ = stack.http("DELETE", f"/voice/call/callback/{cb['id']}")
    assert code == 200 and reply["state"] == "cancelled", reply
    return str(cb["id"])


def talk(a: str, b: str, **extra: Any) -> dict[str, Any]:
    """A request whose legs ring, answer and hang up by themselves (the simulator's user/)."""
    return {"leg_A": {"to": a, "route": "user"}, "leg_B": {"to": b, "route": "user"}, **extra}


def seqs(reqs: list[Any]) -> list[int]:
    return [r.data["seq"] for r in reqs]


# -- pure parts ------------------------------------------------------------------------------


def test_secrets_are_checked_and_read_from_the_environment() -> None:
    assert parse_secrets(f"{NEW}, {OLD}") == (NEW, OLD)
    assert settings_mod.load({"FSCTL_WEBHOOK_SECRETS": NEW}).webhook_secrets == (NEW,)
    assert settings_mod.load({}).webhook_secrets == ()
    for bad, needle in (("abc", "whsec_"), ("whsec_!!!", "base64"), ("whsec_AAAA", "bytes"),
                        (f"{NEW},{OLD},{new_secret()}", "at most 2")):
        with pytest.raises(ConfigError, match=needle):
            parse_secrets(bad)
    with pytest.raises(ConfigError, match="FSCTL_WEBHOOK_TIMEOUT_S"):
        settings_mod.load({"FSCTL_WEBHOOK_TIMEOUT_S": "0"})


def test_milestones_are_ordered_with_the_final_state_last_and_the_body_takes_its_seq() -> None:
    cb = Callback.from_dict({
        "id": "c1", "state": "completed", "created_at": 10.0, "updated_at": 20.0,
        "ended_at": 19.0, "legs": {
            name: {"to": "1000123", "from": "1000125", "uuid": "u" + name, "job_uuid": "j" + name,
                   "route": "answer", "ring_timeout_s": 30, "times": times}
            for name, times in (("A", {"ringing": 11.0, "answered": 12.0, "bridged": 15.0}),
                                ("B", {"early": 13.0, "answered": 14.0, "bridged": 15.0,
                                       "hungup": 19.5}))}})
    assert [m.key for m in milestones(cb)] == ["queued", "ringing.A", "answered.A", "ringing.B",
                                               "answered.B", "bridged", "completed"]
    assert milestones(cb)[-1].ts == 19.0
    head, tail = body_parts("c1", Milestone("answered", 12.0, "A"), {"id": "c1", "x": [1]})
    body = json.loads(head + "7" + tail)
    assert body == {"type": "callback.answered", "timestamp": "1970-01-01T00:00:12.000Z",
                    "data": {"callback_id": "c1", "seq": 7, "event": "answered", "leg": "A",
                             "at": 12.0, "callback": {"id": "c1", "x": [1]}}}


@pytest.mark.parametrize("address,why", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("::ffff:10.0.0.1", "private"), ("0.0.0.0", "unspecified"), ("100.64.0.1", "not global"),
    ("8.8.8.8", None), ("2001:4860:4860::8888", None)])
def test_address_classes(address: str, why: str | None) -> None:
    import ipaddress

    assert address_problem(ipaddress.ip_address(address)) == why


def test_check_url_resolves_and_refuses_loopback_unless_allowed() -> None:
    with pytest.raises(UrlRefused, match="loopback.*FSCTL_WEBHOOK_ALLOW_PRIVATE"):
        check_url("http://localhost:9/x", allow_private=False)
    assert check_url("http://localhost:9/x", allow_private=True).address in ("127.0.0.1", "::1")
    assert check_url("https://8.8.8.8/x", allow_private=False).port == 443  # literal: no DNS


# -- end to end ------------------------------------------------------------------------------


def test_a_callback_s_events_arrive_signed_in_order_with_its_state(redis_url: str,
                                                                   receiver: Receiver) -> None:
    s = make_stack(redis_url, worker=True, webhook_secrets=(NEW, OLD))
    sender = start_sender(s)
    try:
        cb = s.create(talk("1000123", "1000125", status_callback=receiver.url(),
                           metadata={"ticket": "CRM-48213"}))
        only = s.create(talk("1000131", "1000132", status_callback=receiver.url("/only"),
                             status_events=["bridged", "completed"]))
        plain = s.create(talk("1000141", "1000142"))
        for c in (cb, only, plain):
            s.wait_for(c["id"], "completed", timeout_s=15)
        got = receiver.wait_count(1, where=lambda r: r.data.get("event") == "completed"
                                  and r.data["callback_id"] == cb["id"])
        got = receiver.of(cb["id"])
        events = [r.data["event"] + (f".{r.data['leg']}" if r.data["leg"] else "") for r in got]
        assert events[0] == "queued" and events[-1] == "completed", events
        assert events == ["queued", "ringing.A", "answered.A", "ringing.B", "answered.B",
                          "bridged", "completed"], events
        assert seqs(got) == list(range(1, len(got) + 1))
        ats = [r.data["at"] for r in got]
        assert ats == sorted(ats)
        final = s.get(cb["id"])
        last = got[-1].data["callback"]
        assert (last["id"], last["state"], last["talk_time_s"]) == \
            (final["id"], "completed", final["talk_time_s"])
        assert last["status_callback"] == receiver.url() and last["status_events"] is None
        assert all(r.data["callback"]["metadata"] == {"ticket": "CRM-48213"} for r in got)
        assert last["legs"]["A"]["uuid"] == final["legs"]["A"]["uuid"]
        assert last["history"] == final["history"][:len(last["history"])]
        assert {"ts": final["ended_at"], "event": "state", "state": "completed"}.items() <= \
            next(h for h in last["history"] if h.get("state") == "completed").items()
        assert last["legs"]["B"]["times"]["bridged"] == final["legs"]["B"]["times"]["bridged"]
        for r in got:
            assert r.headers["webhook-id"].startswith(f"msg_{cb['id']}_")
            assert r.headers["webhook-signature"].count("v1,") == 2
            for secret in (NEW, OLD):  # both secrets of the rotation verify it
                assert Webhook(secret).verify(r.body, r.headers) == r.json
            with pytest.raises(WebhookVerificationError):
                Webhook(new_secret()).verify(r.body, r.headers)
        tampered = dict(got[0].headers, **{"webhook-id": got[1].headers["webhook-id"]})
        with pytest.raises(WebhookVerificationError):
            Webhook(NEW).verify(got[0].body, tampered)
        filtered = receiver.wait_count(2, where=lambda r: r.path == "/only")
        assert [r.data["event"] for r in filtered] == ["bridged", "completed"]
        assert seqs(filtered) == [1, 2]
        wait_until(lambda: sender.stats["delivered"] == len(got) + 2, what="all settled")
        assert receiver.of(plain["id"]) == [] and len(receiver.requests) == len(got) + 2
    finally:
        sender.stop()
        s.close()


def test_5xx_is_retried_with_the_same_id_then_delivered_in_order(api: Stack) -> None:
    receiver = Receiver(statuses=[500, 503])
    sender = start_sender(api)
    try:
        cid = queued_then_cancelled(api, receiver.url())
        got = receiver.wait_count(4)
        assert [(r.data["event"], r.data["seq"]) for r in got] == \
            [("queued", 1)] * 3 + [("cancelled", 2)]
        assert len({r.headers["webhook-id"] for r in got[:3]}) == 1
        wait_until(lambda: sender.stats["delivered"] == 2, what="both delivered")
        assert sender.stats["retried"] == 2 and sender.stats["dead"] == 0
        assert sender.queue.pending(cid) == []
    finally:
        sender.stop()
        receiver.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def delivery_metrics(api: Stack) -> dict[str, float]:
    """fsctl_webhook_deliveries_total by result, as the API's /metrics shows it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{api.api_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {s.labels["result"]: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "fsctl_webhook_deliveries_total"}


def test_an_outage_dead_letters_with_the_reason_and_replay_delivers(api: Stack) -> None:
    port = free_port()  # nothing listens there yet: connection refused
    sender = start_sender(api)
    receiver: Receiver | None = None
    try:
        cid = queued_then_cancelled(api, f"http://127.0.0.1:{port}/hook")
        dead = wait_until(lambda: len(api.http("GET", "/voice/webhooks/dead")[1]["items"]) == 2
                          and api.http("GET", "/voice/webhooks/dead")[1]["items"],
                          what="both deliveries dead")
        assert [d["event"] for d in dead] == ["cancelled", "queued"]  # newest first
        for d in dead:
            assert d["callback_id"] == cid and d["attempts"] == 3
            assert d["reason"].startswith("3 attempts; last: connection failed"), d["reason"]
        assert sender.queue.pending(cid) == []
        outage = dict(sender.stats)
        receiver = Receiver(port=port)
        code, reply, _ = api.http("POST", "/voice/webhooks/dead/nope/replay")
        assert code == 404 and "nope" in reply["message"]
        code, reply, _ = api.http("POST", f"/voice/webhooks/dead/{dead[1]['id']}/replay")
        assert code == 202 and reply == {"replayed": [dead[1]["id"]]}
        receiver.wait_count(1)
        code, reply, _ = api.http("POST", "/voice/webhooks/dead/replay")
        assert code == 202 and reply == {"replayed": [dead[0]["id"]]}
        got = receiver.wait_count(2)
        assert [(r.data["event"], r.data["seq"]) for r in got] == [("queued", 1), ("cancelled", 2)]
        assert all(Webhook(NEW).verify(r.body, r.headers) for r in got)
        assert api.http("GET", "/voice/webhooks/dead")[1]["items"] == []
        wait_until(lambda: sender.stats["delivered"] == 2, what="replays delivered")
        counted = delivery_metrics(api)  # the API's /metrics: every sender's, from Redis
        assert counted == {"delivered": 2, "retried": outage["retried"], "dead": 2, "gone": 0}
        report(f"webhooks outage: 2 deliveries, {outage['retried']} retried, {outage['dead']} "
               f"dead-lettered, 2 replayed, {sender.stats['delivered']} delivered after replay")
    finally:
        sender.stop()
        if receiver is not None:
            receiver.close()


def test_410_gone_stops_that_callback_s_deliveries(api: Stack) -> None:
    receiver = Receiver(answer=lambda r: 410 if r.path == "/gone" else 200)
    try:
        first = queued_then_cancelled(api, receiver.url("/gone"))  # both queued before sending
        sender = start_sender(api)
        try:
            receiver.wait_count(1)
            wait_until(lambda: sender.stats["gone"] == 1, what="410 seen")
            assert sender.queue.gone_url(first) == receiver.url("/gone")
            assert sender.queue.pending(first) == []
            other = queued_then_cancelled(api, receiver.url("/fine"))
            assert seqs(receiver.wait_count(2, where=lambda r: r.path == "/fine")) == [1, 2]
            assert [r.data["event"] for r in receiver.of(first)] == ["queued"]
            assert sender.stats["dead"] == 0 and receiver.of(other)
            assert api.http("GET", "/voice/webhooks/dead")[1]["items"] == []
        finally:
            sender.stop()
    finally:
        receiver.close()


def test_enqueue_is_once_per_event_whoever_writes_the_record(api: Stack) -> None:
    """A restarted or adopting worker (a new process: nothing in memory) enqueues nothing twice."""
    cb_id = api.create({**SEED, "status_callback": "http://127.0.0.1:9/x"})["id"]
    cb = api.store.get(cb_id)
    assert cb is not None
    fresh = Store(connect(api.settings.redis_url))
    assert fresh.outbox.enqueue_now(cb) == 0  # queued: the API enqueued it
    cb.legs["A"].times["answered"] = cb.created_at + 1
    fresh.save_many([(cb, cb.state)])
    again = Store(connect(api.settings.redis_url))
    again.save_many([(cb, cb.state)])
    assert again.outbox.enqueue_now(cb) == 0
    queue = Sender(api.settings, api.redis).queue
    assert [m.rsplit("_", 1)[1] for m in queue.pending(cb_id)] == ["queued", "answered.A"]


def test_the_sender_killed_mid_delivery_loses_nothing(api: Stack) -> None:
    receiver = Receiver()
    receiver.hold()  # the first attempts get no answer
    env = {**os.environ, "PYTHONPATH": str(REPO), "FSCTL_REDIS_URL": api.settings.redis_url,
           "FSCTL_WEBHOOK_SECRETS": NEW, "FSCTL_WEBHOOK_ALLOW_PRIVATE": "1",
           "FSCTL_WEBHOOK_TIMEOUT_S": "1.5", "FSCTL_WEBHOOK_BACKOFF_BASE_S": "0.05",
           "FSCTL_LOG_LEVEL": "WARNING"}

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "fsctl", "webhooks"], env=env,
                                start_new_session=True)

    proc = spawn()
    try:
        ids = [queued_then_cancelled(api, receiver.url()) for _ in range(3)]
        wait_until(lambda: receiver.held == 3, what="three attempts in flight")
        kill_group(proc)  # kill -9 while every callback's first delivery is unanswered
        receiver.let_go()
        proc = spawn()
        for cid in ids:
            wait_until(lambda cid=cid: not Sender(api.settings, api.redis).queue.pending(cid),
                       timeout_s=20, what=f"callback {cid} delivered")
            got = seqs(receiver.of(cid))
            assert got[0] == 1 and sorted(set(got)) == [1, 2], got
            assert [n for i, n in enumerate(got) if i == 0 or got[i - 1] != n] == [1, 2], got
            assert all(Webhook(NEW).verify(r.body, r.headers) for r in receiver.of(cid))
        assert api.http("GET", "/voice/webhooks/dead")[1]["items"] == []
    finally:
        terminate_group(proc, 5)
        receiver.close()


def test_call_control_never_waits_for_a_receiver(redis_url: str) -> None:
    receiver = Receiver()
    receiver.hold()  # a receiver that does not answer at all
    s = make_stack(redis_url, worker=True, webhook_concurrency=2, webhook_timeout_s=30.0)
    sender = start_sender(s)
    try:
        hooked = [s.create(talk(f"10002{i}1", f"10002{i}2", status_callback=receiver.url()))
                  for i in range(3)]
        plain = s.create(talk("1000123", "1000125"))
        wait_until(lambda: receiver.held == 2, what="the pool's two attempts hang")
        for c in (*hooked, plain):
            assert s.wait_for(c["id"], "completed", timeout_s=15)["state"] == "completed"
        assert receiver.held == 2 and sender.stats["delivered"] == 0
        assert all(sender.queue.pending(c["id"]) for c in hooked)  # all kept, none sent
        receiver.let_go()
        for c in hooked:
            wait_until(lambda c=c: not sender.queue.pending(c["id"]), timeout_s=15,
                       what="delivered after the receiver answers")
            assert seqs(receiver.of(c["id"]))[-1] == len(receiver.of(c["id"]))
            assert receiver.of(c["id"])[-1].data["event"] == "completed"
    finally:
        sender.stop(timeout_s=1)
        receiver.close()
        s.close()


# -- the SSRF guard and bad input at the API -----------------------------------------------------


@pytest.mark.parametrize("url,needle", [
    ("http://127.0.0.1:9/x", "127.0.0.1, a loopback address"),
    ("http://localhost:9/x", "loopback"),
    ("http://[::1]:9/x", "::1, a loopback address"),
    ("http://10.0.0.1/x", "private"), ("https://192.168.0.10/x", "private"),
    ("http://169.254.169.254/latest/meta-data", "link-local"), ("http://[fe80::1]/", "link-local"),
    ("http://224.0.0.1/", "multicast"), ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("ftp://example.com/x", "http:// or https://"), ("http:///x", "host"),
    ("http://u:p@8.8.8.8/x", "credentials"), ("http://8.8.8.8/x#f", "fragment"),
    ("http://8.8.8.8:99999/", "Port"), ("http://8.8.8.8/a b", "spaces"),
])
def test_the_api_refuses_urls_it_must_not_call(redis_url: str, url: str, needle: str) -> None:
    s = make_stack(redis_url, webhook_allow_private=False)
    try:
        code, reply, _ = s.http("POST", "/voice/call/callback", {**SEED, "status_callback": url})
        assert code == 422, reply
        assert needle in reply["errors"]["status_callback"][0], reply
        assert s.redis.xlen(s.store.keys.jobs) == 0
    finally:
        s.close()


def test_bad_event_lists_and_webhooks_off_are_422(redis_url: str, api: Stack) -> None:
    url = "http://127.0.0.1:9/x"
    for body, field, needle in (
            ({**SEED, "status_events": ["queued"]}, "status_events", "status_callback"),
            ({**SEED, "status_callback": url, "status_events": ["rung"]}, "status_events",
             "Must be one of"),
            ({**SEED, "status_callback": url, "status_events": ["queued", "queued"]},
             "status_events", "twice"),
            ({**SEED, "status_callback": url, "status_events": []}, "status_events", "")):
        code, reply, _ = api.http("POST", "/voice/call/callback", body)
        assert code == 422 and field in reply["errors"], reply
        assert needle in json.dumps(reply["errors"][field])
    off = Stack(redis_url, None, start_worker=False)  # no FSCTL_WEBHOOK_SECRETS
    try:
        code, reply, _ = off.http("POST", "/voice/call/callback", {**SEED, "status_callback": url})
        assert code == 422 and "FSCTL_WEBHOOK_SECRETS" in reply["errors"]["status_callback"][0]
    finally:
        off.close()
    assert api.redis.xlen(api.store.keys.jobs) == 0


def test_delivery_time_check_refuses_what_the_api_let_through(api: Stack,
                                                              receiver: Receiver) -> None:
    """The API allowed loopback; the sender does not (as if DNS changed): dead, not sent."""
    sender = start_sender(api, webhook_allow_private=False)
    try:
        cid = queued_then_cancelled(api, receiver.url())
        dead = wait_until(lambda: len(api.http("GET", "/voice/webhooks/dead")[1]["items"]) == 2
                          and api.http("GET", "/voice/webhooks/dead")[1]["items"])
        assert all("loopback" in d["reason"] and d["attempts"] == 1 for d in dead), dead
        assert receiver.requests == [] and sender.queue.pending(cid) == []
    finally:
        sender.stop()


def test_dead_deliveries_are_seen_and_replayed_by_their_own_token_only(redis_url: str) -> None:
    from fsctl.auth import hash_token, parse_tokens

    full, reader, other = "fsk_hooks_full_token", "fsk_hooks_reader", "fsk_hooks_other"
    tokens = parse_tokens({"tokens": {
        "full": {"sha256": hash_token(full)}, "other": {"sha256": hash_token(other)},
        "reader": {"sha256": hash_token(reader), "permissions": ["callbacks:read"]}}})
    s = make_stack(redis_url, tokens=tokens, webhook_max_attempts=1)
    sender = start_sender(s)

    def call(method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        code, reply, _ = s.http(method, path, body, headers={"Authorization": f"Bearer {token}"})
        return code, reply

    try:
        url = f"http://127.0.0.1:{free_port()}/down"
        code, cb = call("POST", "/voice/call/callback", full, {**SEED, "status_callback": url})
        assert code == 202
        dead = wait_until(lambda: call("GET", "/voice/webhooks/dead", full)[1]["items"])
        assert [d["callback_id"] for d in dead] == [cb["id"]]
        assert call("GET", "/voice/webhooks/dead", other)[1]["items"] == []
        code, reply = call("POST", f"/voice/webhooks/dead/{dead[0]['id']}/replay", other)
        assert code == 404
        assert call("POST", "/voice/webhooks/dead/replay", other) == (202, {"replayed": []})
        code, reply = call("POST", "/voice/webhooks/dead/replay", reader)
        assert code == 403 and "callbacks:create" in reply["message"]
        assert call("GET", "/voice/webhooks/dead?limit=0", full)[0] == 422
        assert call("GET", "/voice/webhooks/dead", reader)[1]["items"] == []  # not its callback
        assert call("POST", "/voice/webhooks/dead/replay", full) == (202, {"replayed": [dead[0]["id"]]})
    finally:
        sender.stop()
        s.close()


def test_fsctl_run_starts_the_sender_and_delivers_end_to_end(tmp_path: Any) -> None:
    """Every part a process of its own (redis, simulator, API, worker, webhooks), as deployed."""
    import signal
    import urllib.request

    from fsctl.embedded import wait_port

    receiver = Receiver()
    api_port, redis_port, esl_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSCTL_")}
    env.update(PYTHONPATH=str(REPO), FSCTL_API_PORT=str(api_port), FSCTL_WEBHOOK_SECRETS=NEW,
               FSCTL_WEBHOOK_ALLOW_PRIVATE="1", FSCTL_LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsctl", "run", "--var", str(tmp_path / "var"),
         "--redis-port", str(redis_port), "--esl-port", str(esl_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port("127.0.0.1", api_port, 30)
        req = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/voice/call/callback", method="POST",
            data=json.dumps({**SEED, "status_callback": receiver.url()}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            cid = json.load(resp)["id"]
        got = receiver.wait_count(1, timeout_s=25, where=lambda r: r.data.get("event")
                                  == "completed")
        got = receiver.of(cid)
        assert got[0].data["event"] == "queued" and got[-1].data["event"] == "completed"
        assert seqs(got) == list(range(1, len(got) + 1))
        assert all(Webhook(NEW).verify(r.body, r.headers) for r in got)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=25)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            out, _ = proc.communicate()
        receiver.close()
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]


def test_redirects_and_other_4xx_are_dead_at_once_and_never_followed(api: Stack) -> None:
    receiver = Receiver(answer=lambda r: 302 if r.path == "/moved" else 400)
    sender = start_sender(api)
    try:
        moved = api.create({**SEED, "status_callback": receiver.url("/moved")})["id"]
        bad = api.create({**SEED, "leg_A": {"to": "1000777"}, "status_callback": receiver.url("/bad")})["id"]
        dead = wait_until(lambda: len(api.http("GET", "/voice/webhooks/dead")[1]["items"]) == 2
                          and api.http("GET", "/voice/webhooks/dead")[1]["items"])
        reasons = {d["callback_id"]: (d["attempts"], d["reason"]) for d in dead}
        assert reasons[moved][0] == 1 and "HTTP 302" in reasons[moved][1]
        assert "/elsewhere" in reasons[moved][1] and "not followed" in reasons[moved][1]
        assert reasons[bad][0] == 1 and reasons[bad][1].startswith("HTTP 400")
        assert sorted(r.path for r in receiver.requests) == ["/bad", "/moved"]  # never /elsewhere
        assert sender.stats["retried"] == 0 and sender.stats["dead"] == 2
    finally:
        sender.stop()
        receiver.close()


def test_a_redis_cli_job_with_a_status_callback_sends_its_events(redis_url: str,
                                                                 receiver: Receiver) -> None:
    s = make_stack(redis_url, worker=True)
    sender = start_sender(s)
    try:
        request = talk("1000123", "1000125", status_callback=receiver.url())
        entry = s.redis.xadd(s.store.keys.jobs, {"request": json.dumps(request)})
        cid = wait_until(lambda: s.redis.get(s.store.keys.job(entry)), what="job taken")
        s.wait_for(cid, "completed", timeout_s=15)
        got = receiver.wait_count(1, where=lambda r: r.data.get("event") == "completed")
        got = receiver.of(cid)
        assert got[0].data["event"] == "queued" and seqs(got) == list(range(1, len(got) + 1))
    finally:
        sender.stop()
        s.close()


def test_the_sender_refuses_to_start_without_secrets(redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSCTL_")}
    env.update(PYTHONPATH=str(REPO), FSCTL_REDIS_URL=redis_url)
    out = subprocess.run([sys.executable, "-m", "fsctl", "webhooks"], env=env, timeout=30, check=False,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "FSCTL_WEBHOOK_SECRETS" in out.stderr, out.stderr


def test_a_receiver_that_does_not_answer_times_out_and_is_retried(api: Stack) -> None:
    receiver = Receiver()
    receiver.hold()
    sender = start_sender(api, webhook_timeout_s=0.3, webhook_max_attempts=2)
    try:
        cid = api.create({**SEED, "status_callback": receiver.url()})["id"]
        dead = wait_until(lambda: api.http("GET", "/voice/webhooks/dead")[1]["items"])
        assert dead[0]["callback_id"] == cid and dead[0]["attempts"] == 2
        assert "timeout" in dead[0]["reason"] or "no answer within" in dead[0]["reason"]
        assert len(receiver.requests) == 2 and sender.stats["retried"] == 1
    finally:
        sender.stop(timeout_s=1)
        receiver.close()
