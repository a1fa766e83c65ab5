"""Fault tests: fsctl as real processes (redis-server, simulators, workers, API processes),
killed and cut off on purpose; an invariant checker after each scenario (see harness.py)."""
