"""Check every behaviour of tests/sip/switchboard.xml against a real FreeSWITCH.

    .venv/bin/python tests/sip/check_switchboard.py [-v] [--keep]

Starts a FreeSWITCH (tests/realfs.py) and one switchboard sipp (tests/sipp.py), originates
one leg per behaviour of the number plan over ESL (``bgapi originate {origination_uuid=…,
ignore_early_media=true,originate_timeout=n}sofia/fsctl/<number>@127.0.0.1:<port> &park()``),
kills a ringing 10507 leg and answered 10500 / 10501 / 10508 / 10510 legs with ``uuid_kill``,
and runs 20 DEFAULT calls at once. Per leg it prints the BACKGROUND_JOB body, Hangup-Cause,
sip_term_status, sip_invite_failure_status, sip_hangup_disposition, originate→answer and
answer→hangup times, and the SIP messages sipp saw for that Call-ID; after each case
``show channels as json`` must be ``{"row_count": 0}``. Exit status 1 on any mismatch with
the plan (tests/sipp.py BEHAVIOURS), 0 when everything matched.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import realfs  # noqa: E402
from sipp import BEHAVIOURS, Sipp, behaviour_for  # noqa: E402

EVENTS = ["CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_ANSWER", "CHANNEL_HANGUP",
          "CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB"]

# SIP final response → what FreeSWITCH reports (Hangup-Cause, BACKGROUND_JOB)
CAUSE_OF = {486: "USER_BUSY", 480: "NO_USER_RESPONSE", 404: "UNALLOCATED_NUMBER",
            503: "NORMAL_TEMPORARY_FAILURE"}

ANSWERED_FAR_BYE = [">INVITE", "<180", "<200", ">ACK", "<BYE", ">200/BYE"]
ANSWERED_FS_BYE = [">INVITE", "<180", "<200", ">ACK", ">BYE", "<200/BYE"]
CANCELLED = [">INVITE", "<180", ">CANCEL", "<200/CANCEL", "<487", ">ACK"]


def refused(code: int) -> list[str]:
    return [">INVITE", "<180", f"<{code}", ">ACK"]


@dataclass
class Case:
    """One originate and what the plan says must happen."""

    name: str
    number: str
    originate_timeout: int = 30
    kill_after_answer_s: float | None = None
    kill_after_ringing_s: float | None = None
    kill_cause: str = ""  # uuid_kill's optional cause argument
    # expectations
    job: str = "+OK"
    cause: str = "NORMAL_CLEARING"
    term_status: str | None = "200"
    invite_failure: str | None = None
    disposition: str = "recv_bye"
    answer_s: float | None = None
    talk_s: float | None = None
    hangup_s: float | None = None  # originate → hangup, for legs never answered
    hangup_tolerance: tuple[float, float] = (0.25, 0.25)
    sip: list[str] = field(default_factory=list)
    # results
    uuid: str = ""
    job_uuid: str = ""
    t0: float = 0.0
    got: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def plan_cases() -> list[Case]:
    cases: list[Case] = []

    def far_bye(name: str, number: str) -> Case:
        b = behaviour_for(number)
        return Case(name, number, answer_s=b.ring_s, talk_s=b.talk_s, sip=ANSWERED_FAR_BYE)

    def fs_bye(name: str, number: str, kill_s: float, early: bool = False) -> Case:
        b = behaviour_for(number)
        sip = [">INVITE", "<183", "<200", ">ACK", ">BYE", "<200/BYE"] if early else ANSWERED_FS_BYE
        # FreeSWITCH's BYE leaves sip_term_status unset
        return Case(name, number, kill_after_answer_s=kill_s, answer_s=b.ring_s, talk_s=kill_s,
                    term_status=None, disposition="send_bye", sip=sip)

    def refuse(name: str, number: str) -> Case:
        b = behaviour_for(number)
        cause = CAUSE_OF[b.final]
        return Case(name, number, job=f"-ERR {cause}", cause=cause, term_status=str(b.final),
                    invite_failure=str(b.final), disposition="recv_refuse", hangup_s=b.ring_s,
                    sip=refused(b.final))

    cases.append(far_bye("DEFAULT", "1000123"))
    cases.append(far_bye("10004 long talk", "1000444"))
    cases.append(far_bye("10004 long talk", "1000445"))
    c = far_bye("100077 slow answer", "1000777")
    c.originate_timeout = 20
    cases.append(c)
    cases.append(far_bye("100077 slow answer", "1000778"))
    cases[-1].originate_timeout = 20
    cases.append(refuse("1000666 busy", "1000666"))
    # rings until CANCEL: originate_timeout=3 expires (whole seconds: between 2 and 3 s)
    cases.append(Case("1000555 no answer", "1000555", originate_timeout=3, job="-ERR NO_ANSWER",
                      cause="NO_ANSWER", term_status=None, invite_failure="487",
                      disposition="send_cancel", hangup_s=3.0, hangup_tolerance=(1.1, 0.3),
                      sip=CANCELLED))
    cases.append(fs_bye("10500 waits for BYE (uuid_kill)", "1050000", 2.0))
    cases.append(fs_bye("10501 answers after 3 s (uuid_kill)", "1050100", 1.0))
    cases.append(far_bye("10502 BYE after 3 s", "1050200"))
    for number, label in (("1050300", "10503 486"), ("1050400", "10504 480"),
                          ("1050500", "10505 404"), ("1050600", "10506 503")):
        cases.append(refuse(label, number))
    # a ringing leg killed: CANCEL, 487; the cause is uuid_kill's (NORMAL_CLEARING by default)
    for number, cause in (("1050700", ""), ("1050701", "ORIGINATOR_CANCEL")):
        name = f"10507 ringing (uuid_kill{' ' + cause if cause else ''})"
        cases.append(Case(name, number, kill_after_ringing_s=1.0, kill_cause=cause,
                          job=f"-ERR {cause or 'NORMAL_CLEARING'}",
                          cause=cause or "NORMAL_CLEARING", term_status=None,
                          invite_failure="487", disposition="send_cancel", hangup_s=1.0,
                          hangup_tolerance=(0.25, 0.4), sip=CANCELLED))
    cases.append(fs_bye("10508 early media (uuid_kill)", "1050800", 1.0, early=True))
    cases.append(far_bye("10509 BYE after 1 s", "1050900"))
    cases.append(fs_bye("10510 answers after 1 s (uuid_kill)", "1051000", 1.0))
    return cases


class Checker:
    def __init__(self, fs: realfs.FreeSwitch, sipp: Sipp, verbose: bool) -> None:
        self.fs = fs
        self.sipp = sipp
        self.verbose = verbose
        self.esl = fs.esl()
        self.events: list = []
        self.esl.on_event(self.events.append)
        self.esl.subscribe(EVENTS)

    # -- events --------------------------------------------------------------------------

    def leg_events(self, case: Case, name: str) -> list:
        return [e for e in self.events if e.headers.get("Event-Name") == name
                and e.headers.get("Unique-ID") == case.uuid]

    def job_event(self, case: Case):
        for e in self.events:
            if e.headers.get("Event-Name") == "BACKGROUND_JOB" \
                    and e.headers.get("Job-UUID") == case.job_uuid:
                return e
        return None

    def wait(self, cond, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if cond():
                return True
            gevent.sleep(0.05)
        return cond()

    # -- one case ------------------------------------------------------------------------

    def originate(self, case: Case) -> None:
        case.uuid = str(uuid.uuid4())
        case.job_uuid = str(uuid.uuid4())
        case.t0 = time.time()
        self.esl.bgapi(f"originate {{origination_uuid={case.uuid},ignore_early_media=true,"
                       f"originate_timeout={case.originate_timeout}}}"
                       f"{self.sipp.dial_string(case.number)} &park()", case.job_uuid)

    def drive(self, case: Case) -> None:
        """Kill the leg when the case says so."""
        if case.kill_after_ringing_s is not None:
            if self.wait(lambda: self.leg_events(case, "CHANNEL_PROGRESS"), 5):
                gevent.sleep(case.kill_after_ringing_s)
                case.got["kill"] = self.esl.api(
                    f"uuid_kill {case.uuid} {case.kill_cause}".strip()).strip()
            else:
                case.problems.append("no CHANNEL_PROGRESS to kill on")
        if case.kill_after_answer_s is not None:
            if self.wait(lambda: self.leg_events(case, "CHANNEL_ANSWER"), 15):
                gevent.sleep(case.kill_after_answer_s)
                case.got["kill"] = self.esl.api(f"uuid_kill {case.uuid}").strip()
            else:
                case.problems.append("no CHANNEL_ANSWER to kill on")

    def finish(self, case: Case) -> None:
        done = self.wait(lambda: self.leg_events(case, "CHANNEL_HANGUP_COMPLETE")
                         and self.job_event(case) is not None, 40)
        if not done:
            case.problems.append("no CHANNEL_HANGUP_COMPLETE / BACKGROUND_JOB within 40 s")
            return
        job = self.job_event(case)
        body = job.body if isinstance(job.body, str) else job.body.decode()
        h = self.leg_events(case, "CHANNEL_HANGUP_COMPLETE")[0].headers
        hangup = self.leg_events(case, "CHANNEL_HANGUP")
        answer = self.leg_events(case, "CHANNEL_ANSWER")
        media = self.leg_events(case, "CHANNEL_PROGRESS_MEDIA")

        def ts(e) -> float:
            return int(e.headers["Event-Date-Timestamp"]) / 1e6

        t_hangup = ts(hangup[0]) if hangup else ts(self.leg_events(case, "CHANNEL_HANGUP_COMPLETE")[0])
        case.got.update(
            job=body.strip(), cause=h.get("Hangup-Cause"), term=h.get("variable_sip_term_status"),
            invite_failure=h.get("variable_sip_invite_failure_status"),
            disposition=h.get("variable_sip_hangup_disposition"),
            call_id=h.get("variable_sip_call_id"),
            answer_s=ts(answer[0]) - case.t0 if answer else None,
            talk_s=t_hangup - ts(answer[0]) if answer else None,
            hangup_s=t_hangup - case.t0,
            early_media=ts(media[0]) - case.t0 if media else None,
        )
        # sipp's view of that Call-ID, once its last message is in the trace
        want = len(case.sip)
        self.wait(lambda: len(self.sipp.calls().get(case.got["call_id"] or "", [])) >= want, 3)
        case.got["sip"] = [m.label for m in self.sipp.calls().get(case.got["call_id"] or "", [])]
        # nothing left in FreeSWITCH
        self.wait(lambda: self.fs_channels() == '{"row_count": 0}', 3)
        case.got["channels"] = self.fs_channels()

    def fs_channels(self) -> str:
        return self.esl.api("show channels as json").strip()

    def judge(self, case: Case) -> None:
        g = case.got
        if "cause" not in g:
            return

        def expect(what: str, got, want) -> None:
            if got != want:
                case.problems.append(f"{what} {got!r} != {want!r}")

        def near(what: str, got: float | None, want: float | None, tol=(0.25, 0.25)) -> None:
            if want is None:
                if got is not None:
                    case.problems.append(f"{what} {got:.2f} s, expected none")
                return
            if got is None:
                case.problems.append(f"{what} missing, expected {want} s")
                return
            lo, hi = want - tol[0] - 0.03 * want, want + tol[1] + 0.03 * want
            if not lo <= got <= hi:
                case.problems.append(f"{what} {got:.2f} s not in [{lo:.2f}, {hi:.2f}]")

        expect("job", g["job"].split(" ")[0] if case.job == "+OK" else g["job"], case.job)
        if case.job == "+OK":
            expect("job uuid", g["job"], f"+OK {case.uuid}")
        expect("Hangup-Cause", g["cause"], case.cause)
        expect("sip_term_status", g["term"], case.term_status)
        expect("sip_invite_failure_status", g["invite_failure"], case.invite_failure)
        expect("sip_hangup_disposition", g["disposition"], case.disposition)
        near("answer", g["answer_s"], case.answer_s)
        near("talk", g["talk_s"], case.talk_s, (0.25, 0.35))
        if case.hangup_s is not None:
            near("hangup", g["hangup_s"], case.hangup_s, case.hangup_tolerance)
        if behaviour_for(case.number).provisional == 183:
            near("early media", g["early_media"], 0.0, (0.1, 0.3))
        expect("sipp messages", g["sip"], case.sip)
        expect("show channels", g["channels"], '{"row_count": 0}')
        if "kill" in g:
            expect("uuid_kill", g["kill"], "+OK")

    def run(self, case: Case) -> Case:
        self.originate(case)
        self.drive(case)
        self.finish(case)
        self.judge(case)
        return case

    def run_concurrent(self, n: int) -> list[Case]:
        cases = []
        for i in range(n):
            number = f"1000{100 + i:03d}"
            b = behaviour_for(number)
            cases.append(Case(f"DEFAULT x{n} #{i + 1}", number, answer_s=b.ring_s,
                              talk_s=b.talk_s, sip=ANSWERED_FAR_BYE))
        for case in cases:
            self.originate(case)
        for case in cases:
            self.finish(case)
        for case in cases:
            self.judge(case)
        return cases


def fmt(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(cases: list[Case]) -> str:
    head = ("case", "number", "BACKGROUND_JOB", "Hangup-Cause", "term", "inv_fail",
            "disposition", "orig→ans", "ans→hup", "orig→hup", "sipp saw", "ok")
    rows = [head]
    for c in cases:
        g = c.got
        job = g.get("job", "-")
        if job.startswith("+OK "):
            job = "+OK <uuid>" if job == f"+OK {c.uuid}" else job
        rows.append((c.name, c.number, job, fmt(g.get("cause")), fmt(g.get("term")),
                     fmt(g.get("invite_failure")), fmt(g.get("disposition")),
                     fmt(g.get("answer_s")), fmt(g.get("talk_s")), fmt(g.get("hangup_s")),
                     " ".join(g.get("sip", [])), "ok" if not c.problems else "MISMATCH"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep sipp's and FreeSWITCH's logs")
    ap.add_argument("--concurrent", type=int, default=20, help="DEFAULT calls at once (20)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fsctl-switchboard-"))
    fs = realfs.FreeSwitch(work / "fs")
    sipp = Sipp(work / "sipp")
    cases: list[Case] = []
    checker: Checker | None = None
    failed = True
    try:
        fs.start()
        sipp.start()
        print(f"FreeSWITCH {fs.api('version').strip()}; sipp on 127.0.0.1:{sipp.port} "
              f"(media {sipp.media_port})\n  {' '.join(sipp.argv())}", flush=True)
        checker = Checker(fs, sipp, args.verbose)
        for case in plan_cases():
            checker.run(case)
            cases.append(case)
            print(f"  {case.name:38} {case.number}: "
                  f"{'ok' if not case.problems else '; '.join(case.problems)}", flush=True)
        concurrent = checker.run_concurrent(args.concurrent)
        cases += concurrent
        bad = [c for c in concurrent if c.problems]
        print(f"  {args.concurrent} DEFAULT calls at once: "
              f"{'ok' if not bad else f'{len(bad)} mismatched'}", flush=True)
        errors = [line for line in sipp.read("errors").splitlines()
                  if any(w in line for w in ("nexpected", "borting", "iscarding", "etransmission"))]
        if not sipp.alive:
            errors.append(f"sipp exited ({sipp.proc.returncode if sipp.proc else '?'})")
        print("\n" + table(cases))
        covered = {behaviour_for(c.number).prefix for c in cases}
        missing = [p or "DEFAULT" for p in BEHAVIOURS if p not in covered]
        if missing:
            errors.append(f"plan entries not checked: {missing}")
        for line in errors:
            print(f"sipp: {line}")
        problems = [c for c in cases if c.problems]
        for c in problems:
            print(f"MISMATCH {c.name} {c.number}: {'; '.join(c.problems)}")
        failed = bool(problems or errors)
        print("\n" + ("FAILED" if failed else f"all {len(cases)} legs matched the plan"))
    finally:
        if checker is not None:
            checker.esl.close()
        sipp.stop()
        fs.stop()
        if failed or args.keep:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
