"""The progress endpoint: the trainer's rank 0 POSTs its progress record here (HTTPS, aiohttp on the operator's
event loop) instead of the operator reading every training pod's log (the shape of Kubeflow Trainer's KEP-2779,
"TrainJob progress": the runtime pushes, the controller does not poll).

Who may push: a pod's projected ServiceAccount token for the audience `quranft-progress` (builders.py mounts one
into each training pod), checked with a TokenReview. The API server vouches for the pod the token is bound to
(`authentication.kubernetes.io/pod-name` in the user's extra; a bound token stops validating once its pod is
gone), and the operator's pod index says whether that pod is the rank-0 training pod of a run it manages; a
token that does not review is 401, a valid one of any other pod 403, a body that is not a progress record 400.
A reviewed token is cached by its sha256 until its expiry, at most TOKEN_CACHE_CAP_S: one TokenReview per pod
per token, not per push.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Hashable, Mapping
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import ValidationError

from quranft.contract.progress import ProgressRecord
from quranft.contract.push import AUDIENCE, PATH, PUSH_AFTER_HEADER, PUSH_KEEPALIVE_S

from .progress_store import ProgressStore
from .progress_tls import server_tls
from .settings import OperatorSettings

TOKEN_CACHE_CAP_S = 600.0  # a cached review outlives its pod by at most this much (the index check still runs)
MAX_BODY = 64 * 1024  # a record is a few hundred bytes
POD_NAME, POD_UID = "authentication.kubernetes.io/pod-name", "authentication.kubernetes.io/pod-uid"
SA_PREFIX = "system:serviceaccount:"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """Who a reviewed token belongs to: the pod it is bound to ("" for a token of no pod, or of no
    ServiceAccount: authenticated, but never a run's training pod)."""
    namespace: str
    pod: str
    pod_uid: str = ""


def identity_of(review: Mapping[str, Any]) -> Identity | None:
    """The pod of a TokenReview's status; None unless the token is valid for our audience."""
    status = review.get("status") or {}
    if not status.get("authenticated") or AUDIENCE not in (status.get("audiences") or [AUDIENCE]):
        return None
    user = status.get("user") or {}
    username = user.get("username") or ""
    if not username.startswith(SA_PREFIX) or username.count(":") != 3:
        return Identity("", "")
    extra = user.get("extra") or {}
    pod, uid = (extra.get(POD_NAME) or [""])[0], (extra.get(POD_UID) or [""])[0]
    return Identity(username.split(":")[2], pod, uid)


def token_expiry(token: str) -> float | None:
    """The `exp` claim (Unix time) of a JWT, read without verifying: only after the API server accepted it."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


class TokenCache:
    """sha256(token) -> (identity, until): a reviewed token is trusted until its expiry, capped."""

    def __init__(self, cap_s: float = TOKEN_CACHE_CAP_S, clock: Callable[[], float] = time.time):
        self.cap_s, self._clock = cap_s, clock
        self._entries: dict[str, tuple[Identity, float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> Identity | None:
        now, key = self._clock(), self.digest(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if now >= entry[1]:
                del self._entries[key]
                return None
            return entry[0]

    def put(self, token: str, identity: Identity, expires_at: float | None) -> None:
        now = self._clock()
        until = now + self.cap_s if expires_at is None else min(expires_at, now + self.cap_s)
        if until <= now:
            return
        with self._lock:
            if len(self._entries) > 10_000:  # expired entries of pods long gone
                self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
            self._entries[self.digest(token)] = (identity, until)


def training_run(identity: Identity, run_pods: Mapping[Any, Any]) -> str | None:
    """The run whose rank-0 training pod `identity` is, from the operator's pod index ((namespace, run, stage)
    -> pod views); None for any other pod."""
    for key in list(run_pods):
        namespace, run, stage = key
        if identity.pod and namespace == identity.namespace and stage == "train" and \
                _reporter_in(run_pods, key, identity.pod):
            return run
    return None


def still_training(identity: Identity, run: str, run_pods: Mapping[Any, Any]) -> bool:
    return _reporter_in(run_pods, (identity.namespace, run, "train"), identity.pod)


def _reporter_in(run_pods: Mapping[Any, Any], key: Any, pod: str) -> bool:
    return any(v.name == pod and v.completion_index in (None, 0) for v in run_pods.get(key, ()))


Review = Callable[[str], Awaitable[Mapping[str, Any]]]


class ProgressEndpoint:
    """The request handler: authenticate, map the pod to its run, store the record, wake the run's pass."""

    def __init__(self, review: Review, run_pods: Mapping[Any, Any], store: ProgressStore,
                 wake: Callable[[Hashable], Any], count: Callable[[str], None] = lambda code: None,
                 cache: TokenCache | None = None):
        self.review, self.run_pods, self.store, self.wake, self.count = review, run_pods, store, wake, count
        self.cache = cache or TokenCache()
        self.runs: dict[Identity, str] = {}  # pod -> run, as mapped when its token was reviewed

    async def handle(self, request: web.Request) -> web.Response:
        response = await self._handle(request)
        self.count(str(response.status))
        return response

    async def _handle(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return web.Response(status=401, text="a Bearer token is required\n")
        token = token.strip()
        identity = self.cache.get(token)
        if identity is None:
            try:
                identity = identity_of(await self.review(token))
            except Exception as exc:  # noqa: BLE001  the API server is unreachable: the trainer retries later
                log.warning("progress push: TokenReview failed: %s", exc)
                return web.Response(status=503, text="token review unavailable\n")
            if identity is None:
                return web.Response(status=401, text="token not valid for audience quranft-progress\n")
            self.cache.put(token, identity, token_expiry(token))
        run = self.runs.get(identity)
        if run is None or not still_training(identity, run, self.run_pods):
            run = training_run(identity, self.run_pods)
            if run is None:
                return web.Response(status=403, text=f"pod {identity.namespace}/{identity.pod} is not the "
                                                     "rank-0 training pod of a QuranFineTune\n")
            if len(self.runs) > 10_000:  # mostly pods long gone; the live ones map again on their next push
                self.runs.clear()
            self.runs[identity] = run
        try:
            doc = json.loads(await request.read())
            record = ProgressRecord.model_validate(doc).wire() if isinstance(doc, dict) else None
        except (ValueError, ValidationError):
            record = None
        if record is None:
            return web.Response(status=400, text="the body must be a progress record (quranft.contract.progress)\n")
        self._push((identity.namespace, run), identity.pod, doc)
        return web.Response(status=204, headers={PUSH_AFTER_HEADER: f"{self.store.push_after((identity.namespace, run)):.1f}"})

    def _push(self, key: Hashable, pod: str, doc: Mapping[str, Any]) -> None:
        delay = self.store.push(key, pod, doc)
        if delay is None:
            return  # a wake for this run is already scheduled; it takes the newest record
        if delay <= 0:
            self.wake(key)
            return

        def fire() -> None:
            self.store.wake_fired(key)
            self.wake(key)
        asyncio.get_running_loop().call_later(delay, fire)


@dataclass
class Served:
    runner: web.AppRunner
    url: str
    ca_pem: str
    endpoint: ProgressEndpoint

    async def stop(self) -> None:
        await self.runner.cleanup()


def kube_review(kube: Any) -> Review:
    """A TokenReview through the operator's API client, in a thread (the client is synchronous)."""
    from kubernetes import client

    api = client.AuthenticationV1Api(kube.api)

    def review(token: str) -> Mapping[str, Any]:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": [AUDIENCE]}}
        return json.loads(api.create_token_review(body, _preload_content=False).data)

    async def call(token: str) -> Mapping[str, Any]:
        return await asyncio.to_thread(review, token)
    return call


async def serve(cfg: OperatorSettings, endpoint: ProgressEndpoint) -> Served:
    """Start the HTTPS endpoint on the running loop; the URL the pods get is settings.progress_url, or
    https://127.0.0.1:<bound port> (the embedded cluster's pods share the host's loopback)."""
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(PATH, endpoint.handle)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=PUSH_KEEPALIVE_S)
    await runner.setup()
    hosts = ["127.0.0.1", "localhost", *filter(None, [urlsplit(cfg.progress_url).hostname])]
    tls = server_tls(cfg.progress_cert_file, cfg.progress_key_file, cfg.progress_ca_file, hosts)
    site = web.TCPSite(runner, cfg.progress_address, cfg.progress_port, ssl_context=tls.context)
    await site.start()
    port = runner.addresses[0][1]
    url = (cfg.progress_url or f"https://127.0.0.1:{port}").rstrip("/") + PATH
    log.info("progress endpoint on %s:%d (pods push to %s)", cfg.progress_address, port, url)
    return Served(runner, url, tls.ca_pem, endpoint)


async def start(memo: Any, run_pods: Mapping[Any, Any]) -> Served | None:
    """Serve the endpoint for the operator in `memo` (kopf's startup); the URL and CA then ride on
    memo.settings (progress_endpoint, progress_ca_pem) into every training pod built afterwards. None when
    progressPush is off or the endpoint cannot start: then every training pod's log is read (the fallback)."""
    cfg: OperatorSettings = memo.settings
    if not cfg.progress_push:
        return None
    pushes = memo.metrics.progress_pushes
    endpoint = ProgressEndpoint(kube_review(memo.kube), run_pods, memo.progress, memo.wakeups.wake,
                                count=lambda code: pushes.labels(code=code).inc())
    try:
        served = await serve(cfg, endpoint)
    except (OSError, ValueError) as exc:
        log.error("progress endpoint not started (%s); reading the training logs instead", exc)
        memo.progress.stale_after = 0.0
        return None
    memo.settings = cfg.model_copy(update={"progress_endpoint": served.url, "progress_ca_pem": served.ca_pem})
    return served
