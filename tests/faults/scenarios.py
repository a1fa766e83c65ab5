"""What every fault-scenario module shares: the report printed at the end, the bounded
cluster fixture, and the small predicates the scenarios are written with."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import gevent
import pytest
import redis

from .harness import ROWS, Report, wait_records, wait_until, write_report

C = TypeVar("C")


class ReportPlugin:
    """Prints a fault table in the terminal summary, whatever the capture mode."""

    def __init__(self, title: str, path: Path) -> None:
        self.title, self.path = title, path

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not ROWS:
            return
        terminalreporter.write_sep("=", self.title)
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            text = write_report(path=self.path)
        for line in text.splitlines():
            terminalreporter.write_line(line)


def report_rows(request: pytest.FixtureRequest, title: str, path: Path, what: str,
                cleanups: tuple[Callable[[], None], ...]) -> Iterator[None]:
    """The body of a module's report fixture: rows collected, printed and written to
    ``path`` at the end; ``cleanups`` kill whatever the scenarios left."""
    ROWS.clear()
    request.config.pluginmanager.register(ReportPlugin(title, path), f"fsctl-{path.stem}")
    t0 = time.monotonic()
    try:
        yield
    finally:
        for cleanup in cleanups:
            cleanup()
        write_report([(f"# {len(ROWS)} scenarios{what} in {time.monotonic() - t0:.0f}s "
                       f"(process logs: var/faults/<scenario>/)")], path=path)


def clusters(factory: Callable[[str], C], timeout_s: float) -> Iterator[Callable[[str], C]]:
    """The body of a ``make_cluster`` fixture: a gevent.Timeout bounds the whole scenario;
    teardown closes every cluster made."""
    made: list[Any] = []
    timeout = gevent.Timeout(timeout_s, AssertionError(f"scenario took more than {timeout_s}s"))

    def make(name: str) -> C:
        cluster = factory(name)
        made.append(cluster)
        return cluster

    timeout.start()
    try:
        yield make
    finally:
        timeout.cancel()
        for cluster in made:
            cluster.close()


def ids(accepted: list[Any]) -> list[str]:
    return [a.id for a in accepted if a is not None]


def state_is(*states: str) -> Callable[[dict[str, Any]], bool]:
    return lambda rec: rec["state"] in states


def leg_is(leg: str, *states: str, cb_state: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda rec: (rec["legs"][leg]["state"] in states
                        and (cb_state is None or rec["state"] == cb_state))


def expect(report: Report, failures: list[str]) -> None:
    """Fail with the row, the invariant problems and the scenario's own failures."""
    problems = report.problems() + failures
    assert not problems, f"{report.row()}\n" + "\n".join(problems)


def reconnect_time(proxy: Any, before: int, since: float, timeout_s: float) -> float | None:
    """Seconds from ``since`` until the worker opened its two new connections, or None."""
    try:
        wait_until(lambda: len(proxy.accepted) >= before + 2 and len(proxy.live_pairs) >= 2,
                   timeout_s, "the worker to reconnect", 0.05)
    except AssertionError:
        return None
    return proxy.accepted[before + 1] - since


def wait_mix(r: redis.Redis, groups: dict[str, list[str]], timeout_s: float = 8.0) -> None:
    """Wait for live_mix's groups: bridged, waiting with B ringing, dialing with A ringing."""
    wait_records(r, groups["bridged"], state_is("bridged"), timeout_s, "bridged")
    wait_records(r, groups["waiting"], leg_is("B", "ringing", cb_state="waiting"), timeout_s,
                 "waiting with B ringing")
    wait_records(r, groups["a_ringing"], leg_is("A", "ringing", cb_state="dialing"), timeout_s,
                 "dialing with A ringing")
