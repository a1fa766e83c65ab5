"""A FreeSWITCH simulator: an ESL server (mod_event_socket) with a channel model that
produces FreeSWITCH 1.11's event sequences (see shared/fixtures/freeswitch).

    from fsctl.simulator import Simulator, SimConfig, Behaviour
    sim = Simulator(SimConfig(answer_delay_s=0.2), password="secret").start()
    ...
    sim.stop()
"""

from __future__ import annotations

from .cli import main
from .config import Behaviour, SimConfig, SimUser
from .server import ReceivedCommand, Simulator
from .sofia_vars import FREESWITCH_VARIABLES

__all__ = ["FREESWITCH_VARIABLES", "Behaviour", "ReceivedCommand", "SimConfig", "SimUser",
           "Simulator", "main"]
