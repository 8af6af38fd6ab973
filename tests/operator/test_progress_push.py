"""Progress pushed by the trainer (issue 14 item 5): the pure parts (ETA, the token cache's expiry, the pod -> run
mapping, the store's write interval and fallback, the client's latest-wins queue), the pod spec, and the endpoint
over real HTTPS with the real client (only the TokenReview is a function here; the cluster test reviews for real)."""
from __future__ import annotations

import asyncio
import base64
import json
import statistics
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from specs import body

from quranft.operator import builders, eta, progress_server as ps
from quranft.operator.observe import PodView
from quranft.contract.push import PUSH_AFTER_HEADER
from quranft.operator.progress_store import ProgressStore, progress_for_pass
from quranft.operator.settings import OperatorSettings
from quranft.trainer import progress_push

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def record(step, seconds, max_steps=100):
    return {"step": step, "maxSteps": max_steps, "epoch": 0,
            "updatedAt": (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")}


# --- ETA --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds,text", [(0, "0s"), (45, "45s"), (270, "4m30s"), (3600, "1h0m0s"), (7325, "2h2m5s")])
def test_duration_string(seconds, text):
    assert eta.duration_string(seconds) == text


def test_eta_from_the_attempts_step_rate():
    anchor = eta.anchor_of(record(10, 0))
    assert eta.eta_seconds(anchor, record(30, 40)) == 140  # 20 steps in 40 s: 70 steps left at 2 s a step
    assert eta.with_eta(anchor, record(30, 40)) == {**record(30, 40), "eta": "2m20s", "etaSeconds": 140}
    assert eta.eta_seconds(anchor, record(100, 200)) == 0  # done
    assert eta.eta_seconds(anchor, record(10, 30)) is None  # no step yet
    assert eta.eta_seconds(anchor, record(12, 0.5)) is None  # too short a span to trust
    assert eta.eta_seconds(None, record(30, 40)) is None
    assert "eta" not in eta.with_eta(anchor, {"step": 30, "maxSteps": 100})  # no time: no estimate


# --- the token cache and the pod -> run mapping ------------------------------------------------------------------

def jwt(exp):
    claims = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{claims}.c2ln"


def test_token_cache_trusts_a_review_until_the_tokens_expiry_capped():
    now = [1000.0]
    cache = ps.TokenCache(cap_s=600, clock=lambda: now[0])
    who = ps.Identity("ns", "pod", "uid")
    short, long_ = jwt(1100), jwt(99999)
    assert ps.token_expiry(short) == 1100 and ps.token_expiry("not-a-jwt") is None
    cache.put(short, who, ps.token_expiry(short))
    cache.put(long_, who, ps.token_expiry(long_))
    cache.put(jwt(900), who, 900)  # already expired: never cached
    assert cache.get(short) == who and cache.get(long_) == who and cache.get(jwt(900)) is None
    now[0] = 1100.0
    assert cache.get(short) is None  # its expiry
    assert cache.get(long_) == who
    now[0] = 1600.0
    assert cache.get(long_) is None  # the cap: a review is repeated at least every 10 minutes
    assert cache.get("never-seen") is None


def review(username="system:serviceaccount:ns:default", pod="r-train-abc", authenticated=True,
           audiences=("quranft-progress",)):
    extra = {ps.POD_NAME: [pod], ps.POD_UID: ["u1"]} if pod else {}
    return {"status": {"authenticated": authenticated, "audiences": list(audiences),
                       "user": {"username": username, "extra": extra}}}


def test_identity_of_a_token_review():
    assert ps.identity_of(review()) == ps.Identity("ns", "r-train-abc", "u1")
    assert ps.identity_of(review(authenticated=False)) is None
    assert ps.identity_of(review(audiences=("https://kubernetes.default.svc",))) is None
    # Valid, but of no pod: a person, a ServiceAccount token bound to no pod (the endpoint answers 403).
    assert ps.identity_of(review(username="alice")) == ps.Identity("", "")
    assert ps.identity_of(review(pod=None)) == ps.Identity("ns", "")
    assert ps.training_run(ps.Identity("ns", ""), RUN_PODS) is None
    assert ps.identity_of({}) is None


RUN_PODS = {
    ("ns", "r", "train"): [PodView("r-train-abc"), PodView("r-train-old")],
    ("ns", "r", "prepare"): [PodView("r-prepare-x")],
    ("ns", "multi", "train"): [PodView("multi-train-0-a", completion_index=0),
                               PodView("multi-train-1-b", completion_index=1)],
    ("other", "r", "train"): [PodView("r-train-zzz")],
}


@pytest.mark.parametrize("namespace,pod,run", [
    ("ns", "r-train-abc", "r"),
    ("ns", "multi-train-0-a", "multi"),  # rank 0 of a multi-node run
    ("ns", "multi-train-1-b", None),  # another rank
    ("ns", "r-prepare-x", None),  # another stage
    ("ns", "r-train-zzz", None),  # that pod lives in another namespace
    ("ns", "stranger", None),
])
def test_a_token_maps_only_to_the_rank_0_training_pod_of_a_run(namespace, pod, run):
    assert ps.training_run(ps.Identity(namespace, pod, ""), RUN_PODS) == run


# --- the store: at most one write per interval, latest wins, the fallback ----------------------------------------

class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_store_hands_the_newest_push_once_per_interval():
    clock = Clock()
    store = ProgressStore(interval=10, stale_after=60, clock=clock)
    key = ("ns", "r")
    assert store.take(key, "p").record is None  # first sight of the pod: nothing pushed yet
    assert store.next_in(key, "p") == 60  # it waits for a push (or the fallback, 60 s on)
    assert store.push(key, "p", record(1, 0)) == 0  # wake now
    got = store.take(key, "p").record
    assert got["step"] == 1 and "eta" not in got
    clock.now = 2
    assert store.push(key, "p", record(2, 2)) == pytest.approx(8)  # held back: a wake in 8 s
    assert store.push(key, "p", record(3, 4)) is None  # that wake is already scheduled
    assert store.take(key, "p").record is None and store.next_in(key, "p") == pytest.approx(8)
    clock.now = 10
    store.wake_fired(key)
    got = store.take(key, "p").record
    assert got["step"] == 3 and got["etaSeconds"] == 194  # latest wins; 2 steps in 4 s -> 97 left at 2 s
    assert store.take(key, "p").record is None  # taken once


def test_a_rate_limited_store_spaces_the_writes_of_all_runs_first_come_first_served():
    clock = Clock()
    store = ProgressStore(interval=10, stale_after=60, clock=clock, rate=1.0)
    runs = [("ns", f"r{i}") for i in range(3)]
    for run in runs:
        store.take(run, "p")
    assert [store.push(run, "p", record(1, 0)) for run in runs] == [0, 1, 2]  # one slot a second, in push order
    assert store.take(runs[0], "p").record is not None
    assert store.take(runs[1], "p").record is None and store.next_in(runs[1], "p") == pytest.approx(1)
    clock.now = 1
    store.wake_fired(runs[1])  # the endpoint's delayed wake
    assert store.take(runs[1], "p").record is not None and store.take(runs[2], "p").record is None
    clock.now = 2
    store.wake_fired(runs[2])
    assert store.take(runs[2], "p").record is not None
    clock.now = 30  # idle capacity does not pile up into a burst
    assert [store.push(run, "p", record(2, 30)) for run in runs] == [0, 1, 2]


@pytest.mark.parametrize("runs, rate, cycle", [(20, 10.0, 10), (100, 2.0, 50)])
def test_a_rate_limited_store_writes_each_run_in_turn_with_a_fresh_record(runs, rate, cycle):
    """Pods push when the endpoint asks (push_after); passes take what is due. Up to rate x interval runs the
    interval rules; beyond, all runs together write at the rate, each every runs / rate s, none starved, each
    record written about a second after it was pushed, about one push per write."""
    clock = Clock()
    store = ProgressStore(interval=10, stale_after=60, clock=clock, rate=rate)
    keys = [("ns", f"r{i}") for i in range(runs)]
    taken, ages = {key: [] for key in keys}, []
    next_push, pushes = {key: i / 10 for i, key in enumerate(keys)}, 0
    for tick in range(0, 5000):
        clock.now = tick / 10
        for key in keys:
            if clock.now >= next_push[key]:
                store.push(key, "p", record(tick, clock.now))
                next_push[key], pushes = clock.now + store.push_after(key), pushes + 1
            if store.next_in(key, "p") == 0 and (got := store.take(key, "p").record) is not None:
                taken[key].append(clock.now)
                ages.append(clock.now - got["step"] / 10)
    writes = sum(map(len, taken.values()))
    assert writes <= rate * 500 + runs  # the rate, plus each run's first write
    gaps = [b - a for times in taken.values() for a, b in zip(times, times[1:])]
    assert max(gaps) <= cycle + 1 and statistics.median(gaps) == pytest.approx(cycle, abs=1)
    assert min(map(len, taken.values())) >= max(map(len, taken.values())) - 2  # in turn (the first round fills the ring)
    assert statistics.median(ages) <= 1.5  # pushed just before its slot
    assert pushes <= 1.2 * writes + runs  # about one push per write


def test_a_new_validation_or_checkpoint_result_is_written_at_once():
    clock = Clock()
    store = ProgressStore(interval=10, stale_after=60, clock=clock, rate=1.0)
    key = ("ns", "r")
    store.take(key, "p")
    store.push(key, "p", record(1, 0))
    assert store.take(key, "p").record["step"] == 1
    clock.now = 2
    assert store.push(key, "p", record(2, 2)) == pytest.approx(8)  # held back by the interval
    assert store.push(key, "p", {**record(3, 2), "valWer": 0.9, "valWerStep": 3}) == 0  # news: wake now
    assert store.next_in(key, "p") == 0 and store.take(key, "p").record["valWerStep"] == 3
    clock.now = 3
    store.push(key, "p", {**record(4, 3), "valWer": 0.9, "valWerStep": 3})
    assert store.take(key, "p").record is None  # the same result again is no news: the interval again
    clock.now = 4
    store.push(key, "p", {**record(5, 4), "valWer": 0.9, "valWerStep": 3, "lastCheckpointStep": 5})
    assert store.take(key, "p").record["lastCheckpointStep"] == 5


def test_the_client_sends_news_without_waiting_for_its_turn():
    sent = []

    def send(url, token_file, context, doc, timeout):
        sent.append(doc["step"])
        return 30.0

    pusher = progress_push.ProgressPusher("https://x/v1/progress", "/nonexistent", None, send=send)
    pusher.submit({"step": 1})
    time.sleep(0.2)
    pusher.submit({"step": 2})
    time.sleep(0.2)
    assert sent == [1]  # waiting its 30 s turn
    pusher.submit({"step": 3, "valWer": 0.5, "valWerStep": 3})
    time.sleep(0.3)
    assert sent == [1, 3]  # a validation result goes at once
    pusher.close()


def test_store_falls_back_to_the_log_for_a_pod_that_pushes_nothing():
    clock = Clock()
    store = ProgressStore(interval=10, stale_after=60, clock=clock)
    key, reads = ("ns", "r"), []

    def pass_(pod="p"):
        return progress_for_pass(store, key, pod, lambda: record(5, 0), lambda: reads.append(clock.now))

    assert pass_() is None
    clock.now = 59
    assert pass_() is None and reads == []
    clock.now = 60
    assert pass_()["step"] == 5 and reads == [60]
    clock.now = 65
    assert pass_() is None and store.next_in(key, "p") == pytest.approx(5)  # once per interval
    clock.now = 70
    pass_()
    store.push(key, "p", record(6, 70))  # the pod pushes after all: the log is no longer read
    clock.now = 80
    assert pass_()["step"] == 6 and reads == [60, 70]
    clock.now = 125
    assert pass_() is None and reads == [60, 70]  # 55 s since its last push
    clock.now = 130
    assert pass_()["step"] == 5 and reads == [60, 70, 130]  # it stopped pushing: the log again
    # A new attempt's pod starts its own clock; a push of the old pod is not its progress.
    store.push(key, "p", record(7, 140))
    clock.now = 150
    assert pass_("q") is None and reads == [60, 70, 130]
    assert store.next_in(key, "q") == pytest.approx(60)


def test_log_reads_that_find_nothing_back_off():
    clock = Clock()
    store = ProgressStore(interval=10, stale_after=0, clock=clock)
    reads, found = [], []

    def log_text():
        return record(1, clock.now) if clock.now >= 150 else None  # the trainer loads its model until then

    for now in range(0, 400, 5):
        clock.now = now
        if progress_for_pass(store, ("ns", "r"), "p", log_text, lambda: reads.append(clock.now)):
            found.append(now)
    assert reads[:6] == [0, 20, 60, 140, 260, 270]  # waits 20, 40, 80, 120 (capped) while empty; then 10 again
    assert found[:2] == [260, 270] and store.next_in(("ns", "r"), "p") <= 10


def test_push_off_reads_the_log_every_interval():
    clock = Clock()
    store = ProgressStore(interval=10, stale_after=0, clock=clock)
    reads = []
    for now in (0, 5, 10, 20):
        clock.now = now
        progress_for_pass(store, ("ns", "r"), "p", lambda: record(1, 0), lambda: reads.append(clock.now))
    assert reads == [0, 10, 20]


# --- the client ---------------------------------------------------------------------------------------------------

def test_latest_slot_keeps_only_the_newest():
    slot = progress_push.LatestSlot()
    assert slot.take(timeout=0.01) is None
    for i in range(5):
        slot.put(i)
    assert slot.take(timeout=0) == 4 and slot.take(timeout=0.01) is None


def test_the_client_never_blocks_training_and_logs_a_failure_once():
    gate, sent, logs = threading.Event(), [], []

    def send(url, token_file, context, doc, timeout):
        gate.wait(5)
        if doc["step"] < 3:
            raise OSError("connection refused")
        sent.append(doc["step"])

    pusher = progress_push.ProgressPusher("https://x/v1/progress", "/nonexistent", None, log=logs.append, send=send)
    started = time.monotonic()
    for step in range(1, 4):
        pusher.submit({"step": step})  # the sender is stuck in its first POST: these only replace each other
        if step == 1:
            time.sleep(0.1)
    assert time.monotonic() - started < 0.5
    gate.set()
    assert pusher.flush(5)
    assert sent == [3]  # step 1 failed, 2 was replaced by 3 before it was sent
    assert len([m for m in logs if "failed" in m]) == 1 and logs[-1] == "progress push: recovered"
    pusher.close()


def test_the_client_is_off_without_the_operators_env():
    assert progress_push.ProgressPusher.from_env({}) is None
    assert progress_push.ProgressPusher.from_env({progress_push.URL_ENV: "https://x", progress_push.TOKEN_FILE_ENV:
                                                  "/t", progress_push.CA_ENV: "not a PEM"}, log=lambda m: None) is None


# --- the pod spec -------------------------------------------------------------------------------------------------

def test_only_the_training_pod_gets_the_token_volume_and_the_endpoint():
    settings = OperatorSettings().model_copy(update={"progress_endpoint": "https://127.0.0.1:1/v1/progress",
                                                     "progress_ca_pem": "PEM"})
    b = body()
    pod = builders.build_job("train", b["spec"], b["metadata"], settings)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "progress-token")
    assert volume["projected"]["sources"] == [{"serviceAccountToken": {
        "audience": "quranft-progress", "expirationSeconds": 3600, "path": "token"}}]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env[progress_push.URL_ENV] == "https://127.0.0.1:1/v1/progress" and env[progress_push.CA_ENV] == "PEM"
    assert env[progress_push.TOKEN_FILE_ENV] == "/var/run/secrets/quranft/progress/token"
    assert pod["automountServiceAccountToken"] is False  # only the audience-bound token, never the API token
    for stage in ("prepare", "benchmark"):
        other = builders.build_job(stage, b["spec"], b["metadata"], settings)["spec"]["template"]["spec"]
        assert "progress-token" not in {v["name"] for v in other["volumes"]}
    plain = builders.build_job("train", b["spec"], b["metadata"], OperatorSettings())["spec"]["template"]["spec"]
    assert "progress-token" not in {v["name"] for v in plain["volumes"]}  # no endpoint: the log is read


# --- the endpoint over HTTPS, with the real client -----------------------------------------------------------------

def test_endpoint_accepts_the_training_pod_and_refuses_everyone_else(tmp_path):
    import ssl
    import urllib.error
    import urllib.request

    reviews = {"good": review(pod="r-train-abc"), "rank1": review(pod="multi-train-1-b"),
               "unbound": review(pod=None), "forged": review(authenticated=False)}
    calls, woken = [], []

    async def fake_review(token):
        calls.append(token)
        return reviews.get(token, review(authenticated=False))

    async def scenario():
        store = ProgressStore(interval=10, stale_after=60)
        endpoint = ps.ProgressEndpoint(fake_review, RUN_PODS, store, woken.append)
        served = await ps.serve(OperatorSettings(), endpoint)
        token_file = tmp_path / "token"

        def post(token, data):
            context = ssl.create_default_context(cadata=served.ca_pem)  # verified, as the trainer does
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            request = urllib.request.Request(served.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=5, context=context) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        def client_side():
            token_file.write_text("good\n")
            env = {progress_push.URL_ENV: served.url, progress_push.TOKEN_FILE_ENV: str(token_file),
                   progress_push.CA_ENV: served.ca_pem}
            logs = []
            pusher = progress_push.ProgressPusher.from_env(env, log=logs.append)
            pusher.submit(record(1, 0))
            assert pusher.flush(10) and pusher.sent == 1, logs
            connection = pusher._send._conn
            pusher.submit(record(2, 1))
            assert pusher.flush(10) and pusher.sent == 2, logs
            assert connection is not None and pusher._send._conn is connection  # one TLS handshake, kept alive
            assert pusher.asked_wait == 9.0  # a second before the next write (interval 10): its record is fresh
            codes = {"absent": post(None, b"{}"), "forged": post("forged", json.dumps(record(1, 0)).encode()),
                     "rank1": post("rank1", json.dumps(record(1, 0)).encode()),
                     "unbound": post("unbound", json.dumps(record(1, 0)).encode()),
                     "bad json": post("good", b"{not json"), "not a record": post("good", b'{"step": "x"}')}
            return codes

        codes = await asyncio.get_running_loop().run_in_executor(None, client_side)
        await served.stop()
        return store, codes

    store, codes = asyncio.run(scenario())
    assert codes == {"absent": 401, "forged": 401, "rank1": 403, "unbound": 403, "bad json": 400,
                     "not a record": 400}
    assert woken and woken[0] == ("ns", "r")
    assert calls.count("good") == 1  # reviewed once, then cached
    got = store.take(("ns", "r"), "r-train-abc").record
    assert got["step"] == 2  # the newest


def test_kept_alive_replaces_a_connection_the_server_closed_and_retries_once(tmp_path, monkeypatch):
    import http.client

    made = []

    class Response:
        status = 204

        def read(self):
            return b""

        def getheader(self, name, default=None):
            assert name == PUSH_AFTER_HEADER
            return advice[0]

    class Connection:
        def __init__(self, host, port, context=None, timeout=None):
            self.uses, self.closed = 0, False
            made.append(self)

        def request(self, method, path, body, headers):
            assert headers["Authorization"] == "Bearer tok" and path == "/v1/progress"
            self.uses += 1
            if len(made) == 1 and self.uses == 2:  # the server closed it while idle
                raise http.client.RemoteDisconnected("closed")

        def getresponse(self):
            return Response()

        def close(self):
            self.closed = True

    monkeypatch.setattr(http.client, "HTTPSConnection", Connection)
    token = tmp_path / "token"
    token.write_text("tok\n")
    send = progress_push.KeptAlive()
    advice = [None]
    for step in range(3):
        assert send("https://op:8443/v1/progress", str(token), None, {"step": step}, 1.0) is None
    assert len(made) == 2 and made[0].closed and made[1].uses == 2  # one reconnect, no push lost
    advice[0] = "10.0"  # the next push is due before the endpoint's keep-alive runs out: keep the connection
    assert send("https://op:8443/v1/progress", str(token), None, {"step": 3}, 1.0) == 10 and not made[1].closed
    advice[0] = "95.5"  # queued behind the write rate limit: no idle connection held meanwhile
    assert send("https://op:8443/v1/progress", str(token), None, {"step": 4}, 1.0) == 95.5 and made[1].closed
    send("https://op:8443/v1/progress", str(token), None, {"step": 5}, 1.0)
    assert len(made) == 3


def test_the_client_waits_as_long_as_the_endpoint_asks_unless_flushed():
    sent = []

    def send(url, token_file, context, doc, timeout):
        sent.append((doc["step"], time.monotonic()))
        return 30.0

    pusher = progress_push.ProgressPusher("https://x/v1/progress", "/nonexistent", None, send=send)
    pusher.submit({"step": 1})
    time.sleep(0.2)
    for step in range(2, 5):
        pusher.submit({"step": step})
    time.sleep(0.3)
    assert [step for step, _ in sent] == [1]  # asked to wait 30 s: the newer records replace each other
    started = time.monotonic()
    assert pusher.flush(5) and time.monotonic() - started < 2
    assert [step for step, _ in sent] == [1, 4]  # the end of training: the newest goes at once
    pusher.close()
