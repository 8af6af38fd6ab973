"""The progress push's wire (trainer/progress_push.py -> operator/progress_server.py); standard library only, so
stub stages that start by the thousand import it cheaply.

The endpoint answers each accepted record with PUSH_AFTER_HEADER: the seconds before the pod's next record would
be written to status.progress (about a second before its next write slot: the write interval, or with more runs
than the operator's write rate allows, runs / rate). The pod waits that long before its next push and keeps its
connection open only when that is under PUSH_KEEPALIVE_S, the endpoint's keep-alive timeout: 1,000 pods then hold
no idle TLS connections (asyncio gives each a 256 KiB read buffer) and handshake about as often as the operator
writes.
"""
AUDIENCE = "quranft-progress"  # of the pod's projected ServiceAccount token, checked by TokenReview
PATH = "/v1/progress"
PUSH_AFTER_HEADER = "Quranft-Push-After"
PUSH_KEEPALIVE_S = 30.0
# A record whose validation or checkpoint step is new goes at once and is written at once, not at the next turn:
# a campaign's early stopping decides on valWer, a stop keeps the last checkpoint.
NEWS_KEYS = ("valWerStep", "lastCheckpointStep")


def news(record: dict, before: dict | None) -> bool:
    """Whether `record` reports a validation or checkpoint step that `before` (the last one sent/written) did not."""
    return any(record.get(k) is not None and record.get(k) != (before or {}).get(k) for k in NEWS_KEYS)
