"""The services' collector tuning (fsctl/allocator.py), in a fresh interpreter each time: the
test process's own collector is left alone."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json, weakref
from fsctl.allocator import GC_THRESHOLDS, tune_collector

before = gc.get_freeze_count()
tune_collector()
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a            # a cycle made after the tuning
alive = weakref.ref(a)
del a, b
collected = gc.collect()
print(json.dumps({"thresholds": gc.get_threshold(), "expected": GC_THRESHOLDS,
                  "frozen_before": before, "frozen": gc.get_freeze_count(),
                  "cycle_freed": alive() is None, "collected": collected}))
"""


def probe() -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=30, check=True)
    return json.loads(out.stdout)


def test_start_up_objects_are_frozen_and_collections_are_rarer() -> None:
    r = probe()
    assert r["frozen_before"] == 0 and r["frozen"] > 1000  # modules, classes, settings
    assert tuple(r["thresholds"]) == tuple(r["expected"])
    assert r["thresholds"][0] > 700  # rarer than Python's default


def test_cycles_made_after_the_tuning_are_still_collected() -> None:
    r = probe()
    assert r["cycle_freed"] and r["collected"] >= 2
