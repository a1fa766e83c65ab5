"""Signed, durable status webhooks.

``events`` (which milestones a record has reached, pure), ``payload`` (the body, pure),
``signing`` (Standard Webhooks headers), ``guard`` (the SSRF guard), ``queue`` (the Redis
outbox and delivery queue) and ``sender`` (the ``fsctl webhooks`` process). The worker and
the API only enqueue; only the sender talks HTTP.
"""
