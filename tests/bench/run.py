"""``make bench``: both parts of the benchmark in one run, a table, JSON and a PNG plot.

    .venv/bin/python tests/bench/run.py [--quick] [--no-freeswitch] [--out var/bench] [--publish]

1. Real FreeSWITCH (tests/bench/realfs_part.py; when ``freeswitch`` and ``sipp`` are on PATH):
   fsctl and the raw-ESL baseline (tests/bench/baseline_esl.py) side by side, CPU ms per
   callback per process and the capacity ratio.
2. Simulator pipeline (tests/bench/simpipe.py; always): open-loop load, sustained rate,
   latencies, the rate curve, memory at 10,000 bridged, the stock-greenswitch controller.

A progress bar shows each stage with its live rate and latencies. The results go to
``--out`` (``bench.json``, ``bench.png``, ``bench.md``: the tables the README carries);
``--publish`` also copies them to tests/bench/results/ (what the README shows). Every
target of the performance issue is listed with what it came to: a target missed is written
as missed. ``--quick`` is the smoke run of ``make test``: low rates, a few seconds; its
figures say nothing about speed and no target is judged on them.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _path in (str(REPO), str(HERE.parent), str(HERE)):  # the repo, tests/, tests/bench/
    if _path not in sys.path:
        sys.path.insert(0, _path)

import realfs_part  # noqa: E402
import simpipe  # noqa: E402

Progress = Callable[[str, int, int, dict[str, Any]], None]
PUBLISHED = HERE / "results"
"""Where ``--publish`` puts the latest results (the README links them)."""
QUICK_REALFS = {"rate": 5.0, "seconds": 2.0}
"""The real-FreeSWITCH part of ``--quick`` (a smoke run)."""


# ---- targets -------------------------------------------------------------------------------


def _get(doc: dict[str, Any] | None, *path: str | int) -> Any:
    for key in path:
        if doc is None:
            return None
        if isinstance(key, int):
            doc = doc[key] if isinstance(doc, list) and len(doc) > key else None
        else:
            doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def _curve_point(points: list[dict[str, Any]] | None, rate: float) -> dict[str, Any] | None:
    for point in points or []:
        if point["offered_per_s"] == rate:
            return point
    return None


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: its goal, what it came to, met / missed / not measured."""
    real = _get(result, "freeswitch", "summary")
    sim = result.get("simulator") or {}
    at300 = _curve_point(sim.get("curve_fsctl"), 300)
    sustained = sim.get("sustained")
    rows: list[tuple[str, Any, str, Callable[[Any], bool]]] = [
        ("real FS: fsctl CPU per callback (API + worker + Redis)",
         _get(real, "fsctl_ms_per_callback", "controller"), "<= 5 ms", lambda v: v <= 5),
        ("real FS: worker CPU per callback", _get(real, "fsctl_ms_per_callback", "worker"),
         "<= 3 ms", lambda v: v <= 3),
        ("real FS: capacity, fsctl / raw-ESL baseline", _get(real, "capacity_ratio"),
         ">= 0.9", lambda v: v >= 0.9),
        ("real FS: FreeSWITCH CPU per callback, fsctl - baseline",
         _fs_extra(real), "<= 5 ms", lambda v: v <= 5),
        ("sim: sustained callbacks/s for 60 s, 0 lost", _sustained(sustained),
         ">= 500/s", lambda v: v >= 500),
        ("sim: API p99 at 300/s", _get(at300, "api_latency", "p99_ms"), "<= 10 ms",
         lambda v: v <= 10),
        ("sim: dispatch p99 at 300/s", _get(at300, "dispatch_latency", "p99_ms"), "<= 20 ms",
         lambda v: v <= 20),
        ("sim: bridge p99 at 300/s", _get(at300, "bridge_latency", "p99_ms"), "<= 10 ms",
         lambda v: v <= 10),
        ("sim: bridge max at 300/s", _get(at300, "bridge_latency", "max_ms"), "<= 50 ms",
         lambda v: v <= 50),
        ("sim: worker memory growth, 10,000 bridged", _memory(sim.get("memory")), "<= 40 MB",
         lambda v: v <= 40),
        ("sim: throughput vs stock greenswitch at equal p99",
         _get(sim, "ratio_at_equal_p99", "ratio"), ">= 3x", lambda v: v >= 3),
    ]
    out = []
    for name, value, goal, ok in rows:
        if result.get("quick"):
            verdict = "smoke run: not judged"
        elif value is None:
            verdict = "not measured"
        else:
            verdict = "met" if ok(value) else "MISSED"
        out.append({"target": name, "goal": goal, "measured": value, "verdict": verdict})
    return out


def _fs_extra(real: dict[str, Any] | None) -> float | None:
    f = _get(real, "fsctl_ms_per_callback", "freeswitch")
    b = _get(real, "baseline_ms_per_callback", "freeswitch")
    return None if f is None or b is None else round(f - b, 2)


def _sustained(s: dict[str, Any] | None) -> float | None:
    """Completed/s of the sustained run, only if it lost nothing over its full 60 s."""
    if not s or s.get("seconds", 0) < 60:
        return None
    return s["completed_per_s"] if s["lost"] == 0 else 0.0


def _memory(m: dict[str, Any] | None) -> float | None:
    """Worker growth with 10,000 bridged; with fewer bridged, only a growth that already
    exceeds the target counts (it can only grow with more)."""
    if not m:
        return None
    if m.get("bridged", 0) >= 10_000 or m["worker_growth_mb"] > 40:
        return m["worker_growth_mb"]
    return None


# ---- progress ------------------------------------------------------------------------------


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """A rich progress bar, one line per stage, with the stage's live figures."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False,
                   refresh_per_second=4)
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int, info: dict[str, Any]) -> None:
        text = "  ".join(f"{k} {_short(v)}" for k, v in info.items())
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=max(total, 1), info=text)
        bar.update(tasks[stage], completed=done, total=max(total, 1), info=text)

    with bar:
        yield update


def _short(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


# ---- the run -------------------------------------------------------------------------------


def run(quick: bool, freeswitch: bool, progress: Progress) -> dict[str, Any]:
    result: dict[str, Any] = {"quick": quick, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "machine": machine()}
    if freeswitch:
        spec = QUICK_REALFS if quick else {"rate": 20.0, "seconds": 20.0}
        try:
            result["freeswitch"] = realfs_part.run(spec["rate"], spec["seconds"], progress)
        except realfs_part.Unavailable as exc:
            result["freeswitch"] = None
            result["freeswitch_skipped"] = str(exc)
    else:
        result["freeswitch"] = None
        result["freeswitch_skipped"] = "--no-freeswitch"
    result["simulator"] = simpipe.run(quick=quick, progress=progress)
    result["targets"] = targets(result)
    return result


def machine() -> dict[str, Any]:
    import os
    return {"cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(terse=True), "commit": _commit()}


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# ---- tables and plot -----------------------------------------------------------------------


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)


def markdown(result: dict[str, Any]) -> str:
    """The tables the README carries."""
    lines = [f"Measured {result['started']} on {result['machine']['cores']} cores, "
             f"commit {result['machine']['commit']}"
             + (" (smoke run: figures say nothing about speed)." if result["quick"] else ".")]
    lines += ["", "| target | goal | measured | verdict |", "|---|---|---|---|"]
    lines += [f"| {t['target']} | {t['goal']} | {_cell(t['measured'])} | {t['verdict']} |"
              for t in result["targets"]]
    lines += ["", *_real_table(result), "", *_sim_tables(result)]
    return "\n".join(lines) + "\n"


def _real_table(result: dict[str, Any]) -> list[str]:
    real = result.get("freeswitch")
    if not real:
        return [f"Real FreeSWITCH part skipped: {result.get('freeswitch_skipped')}."]
    s = real["summary"]
    f, b = s["fsctl_ms_per_callback"], s["baseline_ms_per_callback"]
    return [
        (f"Real FreeSWITCH, SIP legs through sipp, {real['rate']:g} callbacks/s for "
        f"{real['seconds']:g} s, {real.get('rounds', 1)} rounds each, ABBA "
        f"({real['callbacks']} callbacks a side; fsctl "
        f"{real['fsctl']['completed']} completed, baseline {real['baseline']['completed']}). "
        f"CPU ms per callback, pooled over the rounds:"),
        "",
        ("| | FreeSWITCH | API | worker | Redis | controller | capacity (callbacks/s on "
        "2 cores) |"),
        "|---|---|---|---|---|---|---|",
        (f"| fsctl | {f['freeswitch']} | {f['api']} | {f['worker']} | {f['redis']} | "
        f"{f['controller']} | {s['fsctl_capacity_per_s']} |"),
        (f"| raw ESL baseline | {b['freeswitch']} | – | – | – | {b['controller']} | "
        f"{s['baseline_capacity_per_s']} |"),
        "",
        f"Capacity ratio fsctl / baseline: **{s['capacity_ratio']}**. {s['note']}.",
    ]


def _sim_tables(result: dict[str, Any]) -> list[str]:
    sim = result["simulator"]
    out: list[str] = []
    s = sim.get("sustained")
    if s:
        cpu = s["cpu_ms_per_callback"]
        out += [f"Simulator pipeline, sustained: offered {s['offered_per_s']:g}/s for "
                f"{s['seconds']:g} s: {s['accepted']} accepted, {s['completed']} completed, "
                f"{s['lost']} lost, **{s['completed_per_s']} completed/s**; API p50/p99 "
                f"{s['api_latency']['p50_ms']}/{s['api_latency']['p99_ms']} ms, dispatch "
                f"{s['dispatch_latency']['p50_ms']}/{s['dispatch_latency']['p99_ms']} ms, "
                f"bridge {s['bridge_latency']['p50_ms']}/{s['bridge_latency']['p99_ms']}/"
                f"{s['bridge_latency']['max_ms']} ms (p50/p99/max). CPU ms per callback: "
                + ", ".join(f"{k} {v}" for k, v in cpu.items()) + ".", ""]
    for label in ("fsctl", "stock"):
        points = sim.get(f"curve_{label}")
        if not points:
            continue
        out += [(f"Rate curve, {label} ({'fsctl' if label == 'fsctl' else 'stock greenswitch'}"
                "): p99 latencies in ms"), "",
                ("| offered/s | completed/s | lost | API p99 | dispatch p99 | bridge p99 | "
                "bridge max | worker CPU ms/cb | holds |"), "|---|---|---|---|---|---|---|---|---|"]
        for p in points:
            cpu = p["cpu_ms_per_callback"].get("worker")
            out.append(f"| {p['offered_per_s']:g} | {p['completed_per_s']} | {p['lost']} | "
                       f"{p['api_latency']['p99_ms']} | {p['dispatch_latency']['p99_ms']} | "
                       f"{p['bridge_latency']['p99_ms']} | {p['bridge_latency']['max_ms']} | "
                       f"{cpu} | {'yes' if p.get('holds') else 'no'} |")
        out.append("")
    m = sim.get("memory")
    if m:
        out += [(f"Memory: {m['bridged']} of {m['callbacks']} callbacks bridged at once "
                 f"(submitted at {m['submit_rate']:g}/s, {m['waited_s']} s waited): worker RSS "
                f"{m['worker_rss_before_mb']} → {m['worker_rss_after_mb']} MB "
                f"(+{m['worker_growth_mb']} MB, {m['worker_kb_per_callback']} KB per callback)."),
                ""]
    r = sim.get("ratio_at_equal_p99")
    if r:
        def held(rate: Any) -> str:
            return f"{rate}/s" if rate is not None else "no rate of the curve"

        ratio = f"**{r['ratio']}×**" if r["ratio"] is not None else "**not measured**"
        out += [(f"Ratio at equal p99: fsctl {held(r['fsctl_rate'])}, stock "
                 f"{held(r['stock_rate'])} → {ratio} ({r['definition']}"
                 f"{'; ' + r['note'] if r['note'] else ''}).")]
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Offered rate against p99 latencies (fsctl and stock), and real-FS CPU per callback."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"fsctl": "-", "stock": "--"}
    for label, style in styles.items():
        points = result["simulator"].get(f"curve_{label}") or []
        rates = [p["offered_per_s"] for p in points]
        for key, color in (("api_latency", "tab:blue"), ("dispatch_latency", "tab:orange"),
                           ("bridge_latency", "tab:green")):
            values = [p[key]["p99_ms"] for p in points]
            if rates and any(v is not None for v in values):
                left.plot(rates, [v if v is not None else float("nan") for v in values],
                          style, color=color, marker="o",
                          label=f"{label} {key.split('_')[0]} p99")
    left.set_xlabel("offered callbacks/s (simulator, open loop)")
    left.set_ylabel("p99 latency (ms)")
    left.set_yscale("log")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    left.set_title("latency against offered rate")
    real = result.get("freeswitch")
    if real:
        s = real["summary"]
        f, b = s["fsctl_ms_per_callback"], s["baseline_ms_per_callback"]
        parts = [("FreeSWITCH", "freeswitch"), ("API", "api"), ("worker", "worker"),
                 ("Redis", "redis"), ("script", "baseline")]
        bottom = [0.0, 0.0]
        for name, key in parts:
            values = [f.get(key) or 0.0, b.get(key) or 0.0]
            right.bar(["fsctl", "raw ESL"], values, bottom=bottom, label=name)
            bottom = [bottom[0] + values[0], bottom[1] + values[1]]
        right.set_ylabel("CPU ms per callback")
        right.set_title(f"real FreeSWITCH, {real['rate']:g} callbacks/s, SIP legs")
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, f"real FreeSWITCH part skipped:\n{result.get('freeswitch_skipped')}",
                   ha="center", va="center")
        right.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fsctl bench: targets")
    for column in ("target", "goal", "measured", "verdict"):
        table.add_column(column)
    for t in result["targets"]:
        style = "red" if t["verdict"] == "MISSED" else None
        table.add_row(t["target"], t["goal"], _cell(t["measured"]), t["verdict"], style=style)
    console = Console()
    console.print(table)
    console.print(markdown(result).split("\n", 1)[1].split("| target |")[0].strip() or "")


# ---- main ----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: low rates, seconds")
    ap.add_argument("--no-freeswitch", action="store_true", help="skip the real-FreeSWITCH part")
    ap.add_argument("--no-plot", action="store_true", help="write no PNG")
    ap.add_argument("--out", type=Path, default=REPO / "var" / "bench")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="measure nothing: tables and plot from an earlier bench.json")
    ap.add_argument("--publish", action="store_true",
                    help=f"also copy the results to {PUBLISHED.relative_to(REPO)}/")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render is not None:
        result = json.loads(args.render.read_text())
        result["targets"] = targets(result)
    else:
        try:
            with progress_bar() as progress:
                result = run(args.quick, not args.no_freeswitch, progress)
        except KeyboardInterrupt:
            print("bench: interrupted; everything it started was stopped", file=sys.stderr)
            return 130
    files = [args.out / "bench.json", args.out / "bench.md"]
    files[0].write_text(json.dumps(result, indent=1) + "\n")
    files[1].write_text(markdown(result))
    if not args.no_plot:
        plot(result, args.out / "bench.png")
        files.append(args.out / "bench.png")
    print_summary(result)
    for path in files:
        print(f"bench: wrote {path}")
    if args.publish:
        PUBLISHED.mkdir(exist_ok=True)
        for path in files:
            shutil.copy(path, PUBLISHED / path.name)
        publish_readme(result)
        print(f"bench: copied to {PUBLISHED}, README.md's results updated")
    return 0


def publish_readme(result: dict[str, Any]) -> None:
    """Put the latest tables and plot between README.md's bench markers."""
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    begin, end = "<!-- bench:begin -->\n", "<!-- bench:end -->"
    head, sep, rest = text.partition(begin)
    _old, sep2, tail = rest.partition(end)
    if not (sep and sep2):
        raise SystemExit("README.md has no bench markers")
    image = f"![make bench]({PUBLISHED.relative_to(REPO)}/bench.png)\n\n"
    readme.write_text(head + begin + markdown(result) + "\n" + image + end + tail,
                      encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
