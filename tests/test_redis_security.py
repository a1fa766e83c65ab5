"""Redis with a password, and over TLS (rediss://): the whole flow still works."""

from __future__ import annotations

import shutil
import socket
import ssl
import tempfile
from pathlib import Path

import gevent
import pytest
import redis
import trustme
from gevent.server import StreamServer
from stack import Stack
from support import esl_target

from fsctl.embedded import free_port, start_redis

pytestmark = pytest.mark.integration

PASSWORD = "a-long-redis-password-for-tests"


@pytest.fixture(scope="module")
def secured_redis():
    """A real redis-server that requires a password."""
    data = Path(tempfile.mkdtemp(prefix="fsctl-redis-pw-"))
    port = free_port()
    proc = start_redis(port, data, extra_args=("--requirepass", PASSWORD))
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        shutil.rmtree(data, ignore_errors=True)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture(scope="module")
def tls_redis(secured_redis: int, tmp_path_factory):
    """TLS in front of the real redis-server (the way stunnel or a managed Redis does it)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def handle(client: socket.socket, _addr: object) -> None:
        upstream = socket.create_connection(("127.0.0.1", secured_redis))
        back = gevent.spawn(_pipe, upstream, client)
        _pipe(client, upstream)
        back.join()

    server = StreamServer(("127.0.0.1", 0), handle, ssl_context=ctx)
    server.start()
    try:
        yield server.server_port, ca_file
    finally:
        server.stop()


def test_password_is_required_and_used(secured_redis: int) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=secured_redis).ping()
    url = f"redis://:{PASSWORD}@127.0.0.1:{secured_redis}/0"
    s = Stack(url, esl_target())
    try:
        rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}})
        rec = s.wait_for(rec["id"], "bridged", timeout_s=5)
        s.kill(rec["legs"]["A"]["uuid"])
        s.wait_for(rec["id"], "completed")
    finally:
        s.close()


def test_wrong_password_means_503_not_202(secured_redis: int) -> None:
    s = Stack(f"redis://:wrong@127.0.0.1:{secured_redis}/0", esl_target(), start_worker=False)
    try:
        code, reply, headers = s.http("POST", "/voice/call/callback",
                                      {"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}})
        assert code == 503 and reply["code"] == 503 and headers["Retry-After"] == "1"
    finally:
        s.close()


def test_rediss_url_works_end_to_end(tls_redis) -> None:
    port, ca_file = tls_redis
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca_file}"
    s = Stack(url, esl_target())
    try:
        rec = s.create({"leg_A": {"to": "1000123"}, "leg_B": {"to": "1000125"}})
        rec = s.wait_for(rec["id"], "bridged", timeout_s=5)
        s.kill(rec["legs"]["B"]["uuid"])
        s.wait_for(rec["id"], "completed")
    finally:
        s.close()
    # and an untrusted certificate is refused, not silently accepted
    bad = redis.Redis.from_url(f"rediss://:{PASSWORD}@127.0.0.1:{port}/0",
                               socket_connect_timeout=3)
    with pytest.raises(redis.ConnectionError):
        bad.ping()
