"""The worker's spool: records it could not write to Redis when it stopped.

A worker keeps every changed record in memory and retries while it runs; if Redis is still
down when it stops (``make run``'s Ctrl-C, a deploy), what it knew — final states with their
true causes and talk times — is written to ``<spool_dir>/<worker>.json`` and put back into
Redis when that worker starts again, before it adopts anything. A spooled record replaces
the one in Redis unless Redis holds a final state that was seen, not inferred.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .model import Callback

log = logging.getLogger(__name__)


class Spool:
    """One worker's spool file (JSON: records and job entries to acknowledge)."""

    def __init__(self, directory: str, worker_name: str) -> None:
        safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in worker_name)
        self.path = Path(directory) / f"{safe}.json"

    def save(self, records: list[Callback], acks: list[str]) -> None:
        """Write atomically (a new file, then renamed over the old one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        doc = {"records": [cb.to_dict() for cb in records], "acks": acks}
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        log.warning("spooled %d records and %d acknowledgements to %s (Redis unavailable); "
                    "they are written when this worker starts again", len(records), len(acks),
                    self.path)

    def load(self) -> tuple[list[Callback], list[str]]:
        """What a previous run left (nothing if no spool); raises ValueError if unreadable."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return [], []
        return [Callback.from_dict(d) for d in doc.get("records", [])], list(doc.get("acks", []))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
