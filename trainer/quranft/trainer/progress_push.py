"""Rank 0 pushes each progress record to the operator (its progress endpoint), besides printing the line.

The operator hands the endpoint to the training pod it creates (operator/quranft/operator/builders.py):
QURANFT_PROGRESS_URL, QURANFT_PROGRESS_TOKEN_FILE (a projected ServiceAccount token for the audience
quranft-progress, which the kubelet rotates: read fresh for every push) and QURANFT_PROGRESS_CA (the CA's PEM;
or QURANFT_PROGRESS_CA_FILE). A daemon thread sends the newest record (latest wins: a slow endpoint costs
skipped records, never a queue) over one kept-alive connection, each POST with a short timeout; a failure is
logged once (and a recovery once) and never fails or slows training. The endpoint says when a newer record would
be written (PUSH_AFTER_HEADER, quranft.contract.push): the thread waits that long before its next push, and
closes its connection when the wait outlasts the endpoint's keep-alive (1,000 runs behind the operator's write
rate limit). Without QURANFT_PROGRESS_URL nothing is pushed: the operator reads the log.

The standard library and the contract's quranft.contract.push only: the stub stages of the cluster tests use
it too.
"""
from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

URL_ENV = "QURANFT_PROGRESS_URL"
TOKEN_FILE_ENV = "QURANFT_PROGRESS_TOKEN_FILE"
CA_ENV = "QURANFT_PROGRESS_CA"
CA_FILE_ENV = "QURANFT_PROGRESS_CA_FILE"
from quranft.contract.push import PUSH_AFTER_HEADER, PUSH_KEEPALIVE_S, news

TIMEOUT_S = 5.0
MAX_PUSH_WAIT_S = 600.0  # an endpoint's advice is capped: a record at least every 10 min


class LatestSlot:
    """A one-item queue where a newer item replaces an unsent one."""

    def __init__(self) -> None:
        self._item: Any = None
        self._full = False
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: Any) -> None:
        with self._cond:
            self._item, self._full = item, True
            self._cond.notify()

    def take(self, timeout: float | None = None) -> Any:
        """The newest item, waiting up to `timeout`; None when there is none (or the slot was closed)."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout)
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> bool:
        return self._full


class PushRefused(Exception):
    """The endpoint answered with an error status."""

    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


class KeptAlive:
    """POSTs over one kept-alive HTTPS connection: a TLS handshake per pod, not per push (at 1,000 runs the
    operator would otherwise handshake hundreds of times a second). A connection the server closed meanwhile
    is replaced and the push retried once."""

    def __init__(self) -> None:
        self._conn: http.client.HTTPSConnection | None = None

    def __call__(self, url: str, token_file: str, context: ssl.SSLContext, doc: Mapping[str, Any],
                 timeout: float) -> float | None:
        """POST `doc`; the seconds the endpoint asks before the next push (None: it said nothing)."""
        with open(token_file, encoding="utf-8") as fh:  # fresh every time: the kubelet rotates the token
            token = fh.read().strip()
        target = urlsplit(url)
        body = json.dumps(doc, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        for attempt in (0, 1):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = http.client.HTTPSConnection(target.hostname, target.port or 443, context=context,
                                                         timeout=timeout)
            try:
                self._conn.request("POST", target.path or "/", body, headers)
                response = self._conn.getresponse()
                response.read()
            except (http.client.HTTPException, OSError):
                self._conn.close()
                self._conn = None
                if reused and attempt == 0:
                    continue  # the server closed an idle connection: once more on a new one
                raise
            if response.status >= 300:
                raise PushRefused(response.status)
            after = _seconds(response.getheader(PUSH_AFTER_HEADER))
            if after is not None and after >= PUSH_KEEPALIVE_S:
                self._conn.close()  # the endpoint would drop it before the next push anyway
                self._conn = None
            return after


class ProgressPusher:
    """submit(doc) from the training loop; a daemon thread POSTs the newest one."""

    def __init__(self, url: str, token_file: str, context: ssl.SSLContext, *, log: Callable[[str], None] = print,
                 timeout: float = TIMEOUT_S, send: Callable[..., None] | None = None):
        self.url, self.token_file, self.context, self.timeout = url, token_file, context, timeout
        self._log, self._send = log, send or KeptAlive()
        self._slot = LatestSlot()
        self._failing = False
        self.sent = 0
        self.asked_wait: float | None = None  # what the endpoint asked after the last push
        self._last_sent: dict | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._hurry = threading.Event()  # flush/close: the newest record goes now, whatever the endpoint asked
        self._thread = threading.Thread(target=self._run, name="progress-push", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> "ProgressPusher | None":
        env = os.environ if env is None else env
        url, token_file = env.get(URL_ENV), env.get(TOKEN_FILE_ENV)
        if not url or not token_file:
            return None
        try:
            context = ssl.create_default_context(cafile=env.get(CA_FILE_ENV) or None,
                                                 cadata=env.get(CA_ENV) or None)
        except (ssl.SSLError, OSError, ValueError) as exc:
            (kwargs.get("log") or print)(f"progress push: off, the CA given is unusable ({exc})")
            return None
        return cls(url, token_file, context, **kwargs)

    def submit(self, doc: Mapping[str, Any]) -> None:
        """Never blocks: the record replaces any not yet sent."""
        self._idle.clear()
        self._slot.put(dict(doc))
        if news(dict(doc), self._last_sent):
            self._hurry.set()  # a new validation or checkpoint result: no waiting for the endpoint's turn

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` for the newest record to be sent (or to fail); True when idle."""
        self._hurry.set()
        return self._idle.wait(timeout)

    def close(self) -> None:
        self._hurry.set()
        self._slot.close()

    def _run(self) -> None:
        while True:
            doc = self._slot.take(timeout=1.0)
            if doc is None:
                if self._slot.closed:
                    return
                self._idle.set()
                continue
            after = None
            try:
                after = self._send(self.url, self.token_file, self.context, doc, self.timeout)
                self.sent, self._last_sent = self.sent + 1, doc
                if self._failing:
                    self._log("progress push: recovered")
                self._failing = False
            except Exception as exc:  # noqa: BLE001  never fails training; the operator falls back to the log
                if not self._failing:
                    self._log(f"progress push to {self.url} failed ({_reason(exc)}); the operator reads the log "
                              "until a push succeeds")
                self._failing = True
            finally:
                if not self._slot.pending:
                    self._idle.set()
            self.asked_wait = after
            if after:
                self._hurry.wait(min(after, MAX_PUSH_WAIT_S))  # newer records meanwhile replace each other
                self._hurry.clear()


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, PushRefused) else f"{type(exc).__name__}: {exc}"
