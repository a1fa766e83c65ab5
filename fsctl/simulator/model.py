"""The call model: originate, answer, park, bridge, playback, hangup — with FreeSWITCH's
event sequences (checked against the recordings in shared/fixtures/freeswitch)."""

from __future__ import annotations

import logging
import math
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import corevars, sofia_vars
from .apps import AppsMixin
from .channel import CALLSTATE_NUMBERS, Channel
from .config import CAUSE_CODES, SIP_CAUSES, Behaviour, normalize_cause
from .dialstring import ORIGINATE_USAGE, UsageError, parse_originate
from .events import OutEvent, now_us
from .limits import CANNOT_CREATE, REFUSED_CAUSE, SOFIA_ERROR
from .sipcall import Rendered, call_fields, encoded_fields, phases_for, render, render_lines
from .timers import TimerQueue

if TYPE_CHECKING:
    from .server import Simulator

log = logging.getLogger(__name__)

_CODEC_READ_AFTER = "channel-read-codec-{}"
"""CODEC (read) repeats the codec in lower-case headers after the profile."""


class Job:
    """One api/bgapi command execution: its API event and, for bgapi, its BACKGROUND_JOB."""

    __slots__ = ("api_seq", "api_ts", "arg", "command", "done", "job_uuid", "on_result")

    def __init__(self, command: str, arg: str, api_seq: int, job_uuid: str | None = None,
                 on_result: Callable[[str], None] | None = None) -> None:
        self.job_uuid = job_uuid
        self.command = command
        self.arg = arg
        self.api_seq = api_seq
        self.api_ts = now_us()
        self.on_result = on_result
        self.done = False


class CallModel(AppsMixin):
    """Every live channel and what happens to it; events go out through the simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.channels: dict[str, Channel] = {}
        self.timers = TimerQueue()

    # ---- event helpers -------------------------------------------------------------------

    def emit(self, ch: Channel, name: str, with_vars: bool,
             before: list[tuple[str, str]] | None = None,
             after: list[tuple[str, str]] | None = None, calling: str | None = None,
             with_caller: bool = True) -> None:
        factory = self.sim.factory
        seq = factory.next_seq()
        if not self.sim.wants(name):
            return
        segments = factory.head(name, seq, calling=calling)
        segments += ch.segments(with_vars, before, after, with_caller)
        self.sim.publish(OutEvent(name, segments))

    def unheard(self, name: str) -> bool:
        """True when no connection listens to ``name``: the event is not built (nor what
        goes in it), but it uses its sequence number all the same, as in FreeSWITCH."""
        if self.sim.wants(name):
            return False
        self.sim.factory.next_seq()
        return True

    def _state(self, ch: Channel, state: str) -> None:
        ch.state = state
        self.emit(ch, "CHANNEL_STATE", False)

    def _callstate(self, ch: Channel, new: str) -> None:
        old, ch.callstate = ch.callstate, new
        if self.unheard("CHANNEL_CALLSTATE"):
            return
        self.emit(ch, "CHANNEL_CALLSTATE", False,
                  before=[("Original-Channel-Call-State", old),
                          ("Channel-Call-State-Number", CALLSTATE_NUMBERS[new])])

    def finish_job(self, job: Job | None, result: str) -> None:
        if job is None or job.done:
            return
        job.done = True
        factory = self.sim.factory
        if self.sim.wants("API"):
            self.sim.publish(factory.simple(
                "API", [("API-Command", job.command), ("API-Command-Argument", job.arg)],
                seq=job.api_seq, ts_us=job.api_ts))
        if job.job_uuid is not None:
            seq = factory.next_seq()
            if self.sim.wants("BACKGROUND_JOB"):
                self.sim.publish(factory.simple(
                    "BACKGROUND_JOB",
                    [("Job-UUID", job.job_uuid), ("Job-Command", job.command),
                     ("Job-Command-Arg", job.arg)],
                    body=result, seq=seq))
        if job.on_result is not None:
            job.on_result(result)

    # ---- timers --------------------------------------------------------------------------

    def later(self, ch: Channel, delay: float, fn: Callable[..., None], *args: Any) -> None:
        timers = ch.timers
        if len(timers) > 4:
            timers[:] = [t for t in timers if t.pending]
        timers.append(self.timers.call_later(delay, self._run_timer, ch, fn, args))

    def _run_timer(self, ch: Channel, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        if ch.gone or ch.hung:
            return
        try:
            fn(ch, *args)
        except Exception:
            log.exception("simulator timer failed for channel %s", ch.uuid)

    def _cancel_timers(self, ch: Channel) -> None:
        for timer in ch.timers:
            timer.cancel()
        ch.timers.clear()

    def timeout_delay(self, seconds: float) -> float:
        """FreeSWITCH counts timeouts on a whole-second clock: expiry in (n-1, n] seconds."""
        if not self.sim.config.whole_second_timeouts:
            return seconds
        now = time.time()
        return math.floor(now) + seconds - now + 0.002

    # ---- originate -----------------------------------------------------------------------

    def _not_created(self, job: Job, endpoint: str, cause: str) -> None:
        """No channel was created: the originate fails with ``cause`` and nothing else."""
        log.info(CANNOT_CREATE, endpoint, cause)
        self.finish_job(job, f"-ERR {cause}\n")

    def originate(self, job: Job) -> None:
        received = time.time()
        try:
            req = parse_originate(job.arg)
        except UsageError as exc:
            log.debug("originate usage error: %s", exc)
            self.finish_job(job, ORIGINATE_USAGE)
            return
        variables = dict(req.variables)
        if req.cid_name:
            variables.setdefault("origination_caller_id_name", req.cid_name)
        if req.cid_num:
            variables.setdefault("origination_caller_id_number", req.cid_num)
        ouuid = variables.get("origination_uuid") or None
        if req.endpoint == "error":  # mod_dptools' error/ endpoint creates no channel
            self._not_created(job, req.endpoint, normalize_cause(req.destination, "UNSPECIFIED"))
            return
        if not self.sim.limits.request(len(self.channels)):
            if req.endpoint == "sofia":
                log.critical(SOFIA_ERROR)
            self._not_created(job, req.endpoint, REFUSED_CAUSE)
            return
        if ouuid and ouuid in self.channels:
            self.finish_job(job, f"-ERR {REFUSED_CAUSE}\n")
            return
        timeout = req.timeout
        if timeout is None:
            try:
                timeout = int(variables.get("originate_timeout", ""))
            except ValueError:
                timeout = self.sim.config.default_originate_timeout_s
        if req.endpoint == "null":
            delay_ms = variables.get("null_auto_answer_delay", "0")
            auto = variables.get("null_enable_auto_answer", "true").lower() != "false"
            behaviour = Behaviour("answer" if auto else "no_answer",
                                  int(delay_ms) / 1000 if delay_ms.isdigit() else 0.0, None)
        else:
            behaviour = self.sim.config.behaviour_for(req.dial)
        # a null leg is created under a uuid of its own, then renamed (CHANNEL_UUID)
        temp = ouuid if ouuid and req.endpoint != "null" else str(uuidlib.uuid4())
        ch = Channel(temp, req.dial, req.destination, req.endpoint, variables, behaviour, job)
        ch.app, ch.app_data = (req.app, req.app_arg) if req.extension is None else ("park", "")
        self.sim.limits.created(len(self.channels) + 1)
        session_id = self.sim.limits.since_startup
        if ch.is_null:
            ch.set_codec(*corevars.NULL_CODEC, write=False)
            self._codec_events(ch, *corevars.NULL_CODEC)
            ch.update_vars(corevars.null_identity(ch, session_id))
            hangup_cause = variables.get("null_hangup_cause")
            if hangup_cause:
                self.emit(ch, "CHANNEL_DESTROY", True)
                self._state(ch, "CS_DESTROY")
                ch.gone = True
                self.finish_job(job, f"-ERR {normalize_cause(hangup_cause)}\n")
                return
            if ouuid:
                ch.rename(ouuid)
                ch.update_vars({"uuid": ouuid, "call_uuid": ouuid})
                self.emit(ch, "CHANNEL_UUID", True, before=[("Old-Unique-ID", temp)])
            ch.update_vars(variables)
            ch.update_vars(corevars.originate_result(ch))
        else:
            if ouuid:
                ch.rename(ouuid)
            ch.sip = call_fields(req.dial, req.destination, ch.cid_number)
            ch.sip_encoded = encoded_fields(ch.sip)
            ch.phases = phases_for(ch.sip["profile"])
            ch.update_vars(corevars.sip_identity(ch, session_id))
            ch.update_vars(*self._sofia_vars(ch, ch.phases.create_before_request))
            ch.update_vars(variables)
            ch.update_vars(corevars.originate_result(ch))
            ch.update_vars(*self._sofia_vars(ch, ch.phases.create_after_request))
        self.channels[ch.uuid] = ch
        if self.sim.trace is not None:
            self.sim.trace.originate(received, ch.uuid, variables)
        ch.exists = True
        self.emit(ch, "CHANNEL_OUTGOING", False)
        self._state(ch, "CS_INIT")
        self.emit(ch, "CHANNEL_CREATE", True)
        self.emit(ch, "CHANNEL_ORIGINATE", True)
        self._state(ch, "CS_ROUTING")
        self._state(ch, "CS_CONSUME_MEDIA")
        self.later(ch, self.timeout_delay(timeout), self._no_answer)
        delay = behaviour.answer_delay_s
        if behaviour.outcome == "answer":
            if not ch.is_null:
                self._provisional(ch)
            if delay <= 0:
                self._answer(ch)
            else:
                self.later(ch, delay, self._answer)
        elif behaviour.outcome == "no_answer":
            if not ch.is_null:
                self._provisional(ch)
        else:
            if delay > 0:
                self._provisional(ch)
                self.later(ch, delay, self._refuse)
            else:
                self._refuse(ch)

    @staticmethod
    def _sofia_vars(ch: Channel, template: sofia_vars.Template) -> Rendered:
        """mod_sofia's variables of one phase of ``ch``, with their header lines."""
        return render_lines(template, ch.sip, ch.sip_encoded)

    def _codec_events(self, ch: Channel, name: str, rate: str, bits: str) -> None:
        """CODEC (read codec set), then CODEC (write codec set); SIP legs add their profile."""
        sip = ch.is_sip
        if not self.unheard("CODEC"):
            self.emit(ch, "CODEC", False, with_caller=sip, calling="CODEC_SIP" if sip else None,
                      after=[(_CODEC_READ_AFTER.format("name"), name),
                             (_CODEC_READ_AFTER.format("rate"), rate),
                             (_CODEC_READ_AFTER.format("bit-rate"), bits)])
        ch.set_codec(name, rate, bits)
        if not self.unheard("CODEC"):
            self.emit(ch, "CODEC", False, with_caller=sip, calling="CODEC_WRITE",
                      after=[("Channel-Write-Codec-Name", name),
                             ("Channel-Write-Codec-Rate", rate),
                             ("Channel-Write-codec-bit-rate", bits)])

    def _provisional(self, ch: Channel) -> None:
        """The far end's provisional response: 183 with SDP (early media) or 180 Ringing."""
        if ch.behaviour.early_media and ch.is_sip:
            self._early_media(ch)
        else:
            self._ring(ch)

    def _ring(self, ch: Channel) -> None:
        """The far end's 180 Ringing."""
        ch.set_network_addr(ch.sip["far_host"])
        ch.update_vars(*self._sofia_vars(ch, ch.phases.ring))
        ch.mark_time("progress")
        self.emit(ch, "CHANNEL_PROGRESS", True)
        self._callstate(ch, "RINGING")

    def _early_media(self, ch: Channel) -> None:
        """The far end's 183 Session Progress with SDP (sip_early_media.rx): the leg is
        pre-answered (Answer-State early, call state EARLY) and its codec set, although the
        originate (ignore_early_media=true) waits on for the 200."""
        ch.set_network_addr(ch.sip["far_host"])
        ch.update_vars(*self._sofia_vars(ch, ch.phases.early_media))
        ch.update_vars(corevars.early_media())
        ch.early_media = True
        ch.answer_state = "early"
        ch.mark_time("progress_media")
        self.emit(ch, "CHANNEL_PROGRESS_MEDIA", True)
        self._callstate(ch, "EARLY")
        ch.set_codec(*corevars.SIP_CODEC)
        self._codec_events(ch, *corevars.SIP_CODEC)

    def _no_answer(self, ch: Channel) -> None:
        if ch.answered:
            return
        self.hangup(ch, "NO_ANSWER", job_early=True)

    def _refuse(self, ch: Channel) -> None:
        """The far end's final refusal (486, 603 …)."""
        status = ch.behaviour.failure_status()
        cause = SIP_CAUSES.get(status, "NORMAL_TEMPORARY_FAILURE")
        if ch.network_addr is None:
            ch.set_network_addr(ch.sip["far_host"])
        ch.update_vars({k: v for k, v in render(sofia_vars.REFUSE, ch.sip).items()
                        if k not in ch.vars})
        self.hangup(ch, cause, sip_vars={
            "sip_hangup_disposition": "recv_refuse",
            **corevars.invite_failure(status),
            "sip_term_status": str(status),
            "proto_specific_hangup_cause": f"sip:{status}",
            "sip_term_cause": str(CAUSE_CODES.get(cause, 41)),
        })

    def _answer(self, ch: Channel) -> None:
        if ch.answered or ch.hung:
            return
        if ch.is_sip:  # the 200 OK and its SDP
            if ch.early_media:  # the codec came with the 183's SDP already
                ch.update_vars(*self._sofia_vars(ch, ch.phases.answer_after_early_media))
            else:
                ch.set_codec(*corevars.SIP_CODEC)
                self._codec_events(ch, *corevars.SIP_CODEC)
                ch.update_vars(*self._sofia_vars(ch, ch.phases.answer))
            ch.update_vars(corevars.codec_vars(corevars.SIP_CODEC))
        ch.answered = True
        ch.answer_state = "answered"
        ch.mark_time("answered")
        self.emit(ch, "CHANNEL_ANSWER", True)
        self._callstate(ch, "ACTIVE")
        ch.finishing = True
        if ch.behaviour.bye_after_answer_s is not None:
            self.later(ch, ch.behaviour.bye_after_answer_s, self.far_end_bye)
        delay = self.sim.config.originate_finish_delay_s
        if delay <= 0:
            self._finish(ch)
        else:
            self.later(ch, delay, self._finish)

    def _finish(self, ch: Channel) -> None:
        """The originate returns: BACKGROUND_JOB +OK, then the application (park) runs."""
        if not ch.finishing or ch.hung:
            return
        ch.finishing = False
        ch.flip_cid()
        ch.update_vars(corevars.flipped(ch))
        self.emit(ch, "CALL_UPDATE", True, before=[("Direction", "RECV")])
        self.finish_job(ch.job, f"+OK {ch.uuid}\n")
        for app, data in ch.pending_apps:  # uuid_broadcast that arrived inside the originate
            if app == "playback":
                ch.update_vars(corevars.playback_started(data))
            self._exec(ch, app, data)
            ch.set_var("current_application_response", "PLAYBACK ERROR")
            self._exec_complete(ch, app, data, "PLAYBACK ERROR")
            self._private_command(ch, app, data)
        if ch.pending_apps:
            ch.del_vars(*corevars.FAILED_PLAYBACK_VARS)
        ch.pending_apps.clear()
        self._state(ch, "CS_EXECUTE")
        ch.app_response = "_none_"
        ch.set_var("current_application", ch.app)
        self._exec(ch, ch.app, ch.app_data)
        ch.parked = True
        if ch.app == "park":
            spec = ch.vars.get("park_timeout")
            ch.del_vars("park_timeout")  # park consumes it
            self.emit(ch, "CHANNEL_PARK", True)
            if self.sim.trace is not None:
                self.sim.trace.park(ch.uuid)
            self._arm_park_timeout(ch, spec)

    def _arm_park_timeout(self, ch: Channel, spec: str | None) -> None:
        if not spec:
            return
        seconds, _, cause = spec.partition(":")
        try:
            secs = int(seconds)
        except ValueError:
            return
        if secs > 0:
            self.later(ch, self.timeout_delay(secs),
                       lambda c: self.hangup(c, normalize_cause(cause)))
            ch.park_timer = ch.timers[-1]

    # ---- bridge --------------------------------------------------------------------------

    def can_bridge(self, a: Channel | None, b: Channel | None) -> bool:
        return (a is not None and b is not None and a is not b and a.answered and b.answered
                and not a.hung and not b.hung and not a.bridged and not b.bridged)

    def _stop_app(self, ch: Channel) -> None:
        """Stop a playback and leave park, with the events FreeSWITCH sends for that."""
        ch.queued_broadcasts.clear()
        if ch.playback is not None:
            self.stop_playback(ch)
        if ch.parked:
            if ch.app == "park":
                # park_timeout is park's own: a leg that leaves park (uuid_bridge) keeps no timer
                timer, ch.park_timer = ch.park_timer, None
                if timer is not None:
                    timer.cancel()
                ch.del_vars(*corevars.PLAYBACK_LOOP_VARS)
                self.emit(ch, "CHANNEL_UNPARK", True)
            self._exec_complete(ch, ch.app, ch.app_data, ch.app_response)
            ch.parked = False

    def _leave_app(self, ch: Channel) -> bool:
        race = ch.finishing
        self._stop_app(ch)
        ch.finishing = False
        self._state(ch, "CS_HIBERNATE")
        self._state(ch, "CS_RESET")
        if race:
            ch.pending_apps.clear()
            self.finish_job(ch.job, "-ERR ORIGINATOR_CANCEL\n")
        return race

    def bridge(self, a: Channel, b: Channel) -> None:
        corevars.bridge(a, b, now_us())  # new profiles first: A's UNPARK already shows them
        self._leave_app(a)
        self._leave_app(b)
        self._state(a, "CS_SOFT_EXECUTE")
        self._state(b, "CS_SOFT_EXECUTE")
        a.del_vars("uuid_bridge")
        self._exec(a, "uuid_bridge", b.uuid)
        self._exec(b, "uuid_bridge", a.uuid)
        a.bridged = b.bridged = True
        a.bridge_a, b.bridge_a = True, False
        a.app = b.app = "uuid_bridge"
        a.mark_time("bridged")
        b.mark_time("bridged")
        self.emit(a, "CHANNEL_BRIDGE", True,
                  before=[("Bridge-A-Unique-ID", a.uuid), ("Bridge-B-Unique-ID", b.uuid)])
        a.update_vars(corevars.bridged(a, b))
        b.update_vars(corevars.bridged(b, a))
        if b.is_sip:  # a sofia originatee passes CS_CONSUME_MEDIA, raced or not
            self._state(b, "CS_CONSUME_MEDIA")
        self._state(b, "CS_EXCHANGE_MEDIA")
        for leg, other in ((a, b), (b, a)):
            if leg.is_sip:
                name, number = corevars.sent_callee(leg)
                self.emit(leg, "CALL_UPDATE", True, before=[
                    ("Direction", "SEND"), ("Sent-Callee-ID-Name", name),
                    ("Sent-Callee-ID-Number", number), ("Bridged-To", other.uuid)])
                if leg.behaviour.talk_s is not None:
                    self.later(leg, leg.behaviour.talk_s, self.far_end_bye)

    # ---- hangup --------------------------------------------------------------------------

    def far_end_bye(self, ch: Channel) -> None:
        self.hangup(ch, "NORMAL_CLEARING", sip_vars={
            "sip_term_status": "200", "proto_specific_hangup_cause": "sip:200",
            "sip_term_cause": "16"}, disposition="recv_bye")

    def hangup(self, ch: Channel, cause: str, sip_vars: dict[str, str] | None = None,
               job_early: bool = False, disposition: str | None = None) -> None:
        """Hang ``ch`` up with ``cause``; ``sip_vars`` are set before CHANNEL_HANGUP, the
        SIP ``disposition`` (default send_bye / send_cancel) when it is reported."""
        if ch.hung or ch.gone:
            return
        if self.sim.trace is not None:
            self.sim.trace.hangup(ch.uuid, cause)
        ch.hung = True
        self._cancel_timers(ch)
        if ch.recording_since is not None:  # FreeSWITCH closes the file: its record_* vars
            ms = int((time.monotonic() - ch.recording_since) * 1000)
            ch.update_vars({"record_seconds": str(ms // 1000), "record_ms": str(ms),
                            "record_samples": str(ms * 8), "record_completion_cause":
                            "success-silence"})
            ch.recording_since = None
        ch.hangup_cause = cause
        ch.answer_state = "hangup"
        ch.mark_time("hangup")
        if sip_vars:
            ch.update_vars(sip_vars)
        bridged = ch.bridged
        partner = ch.other if bridged else None
        if bridged:
            ch.set_var("last_bridge_role", "originator" if ch.bridge_a else "originatee")
        self.emit(ch, "CHANNEL_HANGUP", True)
        if bridged:
            ch.del_vars("bridge_to")
            if ch.bridge_a:
                self._unbridge(ch, cause)
        ch.bridged = False
        if job_early:
            self.finish_job(ch.job, f"-ERR {cause}\n")
        self._stop_app(ch)
        self._state(ch, "CS_HANGUP")
        self._callstate(ch, "HANGUP")
        self._state(ch, "CS_REPORTING")
        ch.update_vars(corevars.hangup_complete(ch, cause, disposition))
        self.emit(ch, "CHANNEL_HANGUP_COMPLETE", True, before=[("Hangup-Cause", cause)])
        self.finish_job(ch.job, f"-ERR {cause}\n")
        if ch.destroy_vars:
            ch.update_vars(ch.destroy_vars)
        self.emit(ch, "CHANNEL_DESTROY", True)
        self._state(ch, "CS_DESTROY")
        ch.gone = True
        if self.channels.get(ch.uuid) is ch:
            del self.channels[ch.uuid]
        if partner is not None and not partner.hung:
            partner.update_vars(corevars.survivor(ch, cause))
            partner.del_vars("bridge_to")
            if partner.bridge_a:
                self._unbridge(partner, cause)
                self._state(partner, "CS_EXECUTE")
            else:
                partner.destroy_vars["bridge_hangup_cause"] = cause
            partner.bridged = False
            self.hangup(partner, "NORMAL_CLEARING")
        # bridged legs refer to each other: without that cycle a call that ended is freed
        # at once, instead of by the garbage collector's full collections
        ch.other = None

    def _unbridge(self, ch: Channel, cause: str) -> None:
        other = ch.other
        before = [("Bridge-A-Unique-ID", ch.uuid)]
        if other is not None:
            before.append(("Bridge-B-Unique-ID", other.uuid))
            ch.set_var("last_bridge_to", other.uuid)
        ch.set_var("bridge_hangup_cause", cause)
        self.emit(ch, "CHANNEL_UNBRIDGE", True, before=before)

    def drop_all(self) -> None:
        """A crash: every channel disappears without a single event."""
        for ch in list(self.channels.values()):
            self._cancel_timers(ch)
            ch.gone = True
        self.channels.clear()
        self.timers.clear()
