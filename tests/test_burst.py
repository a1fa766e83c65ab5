"""A contact-centre burst: hundreds of callbacks posted at once. Every leg counts against
FreeSWITCH's sessions-per-second (30 by default, freeswitch-conf/'s too); fsctl must pace its
originates under it so that every callback completes and FreeSWITCH never throttles.
On the real FreeSWITCH with SIP far ends (sipp): ``make test-freeswitch``.
"""

from __future__ import annotations

import time
from collections import Counter

import gevent
import gevent.pool
import pytest
from support import report

pytestmark = [pytest.mark.integration, pytest.mark.real_freeswitch]

BURST = 300
"""Callbacks posted at once."""
POSTERS = 30
"""Concurrent HTTP clients posting them."""
THROTTLE_LINES = ("Throttle Error", "Over Session Rate", "Over Session Limit")


def test_a_burst_of_300_callbacks_all_complete_without_throttling(stack, freeswitch_node) -> None:
    fs = freeswitch_node
    log_before = fs.log_text()
    # DEFAULT far ends of the switchboard: answer after 0.3 s, BYE 2 s after the answer
    bodies = [{"leg_A": {"to": f"101{i:04d}", "route": "sip"},
               "leg_B": {"to": f"102{i:04d}", "route": "sip"}} for i in range(BURST)]
    t0 = time.time()
    ids = gevent.pool.Pool(POSTERS).map(lambda body: stack.create(body)["id"], bodies)
    posted_s = time.time() - t0
    assert len(set(ids)) == BURST
    pending, final = set(ids), {}
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for cid in list(pending):
            rec = stack.get(cid)
            if rec["state"] in ("completed", "failed", "cancelled"):
                final[cid] = rec
                pending.discard(cid)
        gevent.sleep(0.5)
    took_s = time.time() - t0
    outcomes = Counter(rec["outcome"] for rec in final.values())
    dialed = sorted(leg["times"]["dialed"] for rec in final.values()
                    for leg in rec["legs"].values() if "dialed" in leg["times"])
    rate = (len(dialed) - 1) / (dialed[-1] - dialed[0]) if len(dialed) > 1 else 0.0
    per_second = Counter(int(t) for t in dialed)
    log = fs.log_text()[len(log_before):]
    throttles = {line: log.count(line) for line in THROTTLE_LINES}
    status = fs.api("status")
    report(f"burst on real FreeSWITCH: {BURST} submitted in {posted_s:.1f}s, "
           f"{outcomes.get('completed', 0)} completed, "
           f"{sum(n for o, n in outcomes.items() if o != 'completed')} other "
           f"({dict(outcomes)}), {len(pending)} unfinished; {len(dialed)} legs dialled at "
           f"{rate:.1f}/s (most in one second: {max(per_second.values())}), all done in "
           f"{took_s:.1f}s; FreeSWITCH log: {throttles}")
    assert not pending, f"{len(pending)} callbacks not finished after {took_s:.0f}s"
    assert outcomes == {"completed": BURST}, dict(outcomes)
    assert all(n == 0 for n in throttles.values()), throttles
    assert len(dialed) == 2 * BURST  # every leg dialled once: no attempt was refused
    assert all(leg["attempts"] == 1 for rec in final.values() for leg in rec["legs"].values())
    assert max(per_second.values()) < 30
    stack.wait_no_channels({leg["uuid"] for rec in final.values()
                            for leg in rec["legs"].values()}, timeout_s=10)
    assert "0 session(s) - peak" in status
