"""The client side of the CLI: ``fsctl call | status | ls | tail | cancel`` talk to the
HTTP API (httpx, bounded timeouts) and show what they get, live on a terminal (rich) and
as plain lines through a pipe."""
