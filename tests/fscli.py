"""fs_cli's view of an ESL server (the simulator or a real FreeSWITCH), for the tests."""

from __future__ import annotations

import json

from fsctl.esl import ESLClient


class FsCliView:
    """What fs_cli sees of a node: ``api``, its channels, fsctl's tagged ones, its Core-UUID
    (the simulator and the real FreeSWITCH alike; a subclass gives ``esl()``)."""

    def esl(self) -> ESLClient:
        raise NotImplementedError

    def api(self, command: str) -> str:
        client = self.esl()
        try:
            return client.api(command)
        finally:
            client.close()

    def channels(self) -> list[dict[str, str]]:
        reply = self.api("show channels as json")
        return list(json.loads(reply).get("rows", []))

    def tagged_channels(self) -> list[dict[str, str]]:
        """Live channels that carry fsctl_callback_id (rows plus ``callback_id``)."""
        client = self.esl()
        try:
            rows = json.loads(client.api("show channels as json")).get("rows", [])
            out = []
            for row in rows:
                tag = client.api(f"uuid_getvar {row['uuid']} fsctl_callback_id").strip()
                if tag and tag != "_undef_" and not tag.startswith("-ERR"):
                    out.append({**row, "callback_id": tag})
            return out
        finally:
            client.close()

    def core_uuid(self) -> str:
        return self.api("global_getvar core_uuid").strip()
