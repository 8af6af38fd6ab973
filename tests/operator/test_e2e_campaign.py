"""Campaigns on the embedded cluster, with stub stages (clusterkit.STUB; the benchmark and report stubs below
honour the same contracts): the API server and the dry run refuse bad campaigns before any child exists;
parallelism holds; exactly the improving variant is promoted (and nothing when none improves); the webhook
gets one signed summary; SIGKILLs of the operator at seeded moments change neither the children nor the winner.

The operator runs as its ServiceAccount (the shipped RBAC) with --allow-command-overrides, so children run the
stub stages named in the campaign's quranft.io/stage-commands and quranft.io/variant-stage-commands annotations
and the report Job runs REPORT_STUB.
"""
from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from clusterkit import condition, stub_commands, train_stub
from kubernetes.client.exceptions import ApiException

from quranft.operator import campaign_notify
from quranft.operator.builders import COMMAND_ANNOTATION
from quranft.operator.campaign_spec import CAMPAIGN_PLURAL, LABEL_CAMPAIGN, VARIANT_COMMANDS_ANNOTATION

pytestmark = pytest.mark.cluster
GROUP, VERSION = "quranft.io", "v1alpha1"
HMAC_KEY = b"campaign-test-key"
KILLS = int(os.environ.get("QURANFT_CAMPAIGN_KILLS", "5"))

# A benchmark stage that reports the verdict and recall it is given, on the corpus hash it is given.
BENCH_STUB = r"""
import json, sys
verdict, recall, corpus = sys.argv[1], float(sys.argv[2]), sys.argv[3]
m = {"recall": recall, "precision": recall, "sequenceAccuracy": recall, "avgLatency": 0.1, "p50Latency": 0.1,
     "p90Latency": 0.1, "modelSize": 1234, "total": 40, "scored": 40}
b = dict(m, recall=0.5, precision=0.5, sequenceAccuracy=0.5)
d = {k: round(m[k] - b[k], 4) for k in m}
msg = {"ok": True, "stage": "benchmark", "verdict": verdict, "reason": verdict.capitalize(), "rule": "paired",
       "verdictHead": "ctc", "primaryMetric": "recall", "metrics": m, "baseline": b, "deltas": d,
       "intervals": {"recall": [d["recall"] - 0.05, d["recall"] + 0.05]}, "targets": {},
       "corpus": {"hash": corpus, "clips": 40}, "resultsPath": "/workspace/runs/x/benchmark/latest.json"}
open("/dev/termination-log", "w").write(json.dumps(msg))
"""
# The report Job's stand-in until `quranft benchmark campaign-report` runs here: it prints its input (the test
# reads it from the pod log) and answers with the contract's summary, promoting what it was asked to.
REPORT_STUB = r"""
import json
doc = json.load(open("/etc/quranft-campaign/campaign.json"))
print("CAMPAIGN_INPUT " + json.dumps(doc), flush=True)
name, promote = doc["campaign"]["name"], doc["promote"]
base = "/workspace/models/production/%s" % name
production = None if promote is None else {"variant": promote, "modelPath": base + "/model.nemo",
                                           "lineagePath": base + "/lineage.json", "resultsPath": base + "/results.json",
                                           "history": []}
summary = {"ok": True, "reportPath": "/workspace/campaigns/%s/report.md" % name,
           "plots": ["/workspace/campaigns/%s/metrics.png" % name], "production": production}
open("/dev/termination-log", "w").write(json.dumps(summary))
"""


def bench(verdict: str, recall: float, corpus: str = "corpus-1") -> list[str]:
    return ["python", "-c", BENCH_STUB, verdict, str(recall), corpus]


def campaign_body(name: str, variants: list[dict], verdicts: dict[str, tuple], train_seconds: float = 3.0,
                  report_stub: bool = True, data_path: str = "/workspace/synth", **spec) -> dict:
    commands = stub_commands(train_seconds=train_seconds)
    if report_stub:
        commands["report"] = ["python", "-c", REPORT_STUB]
    per_variant = {v: {"benchmark": bench(*args)} for v, args in verdicts.items()}
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "QuranFineTuneCampaign",
        "metadata": {"name": name, "annotations": {COMMAND_ANNOTATION: json.dumps(commands),
                                                   VARIANT_COMMANDS_ANNOTATION: json.dumps(per_variant)}},
        "spec": {"template": {"data": {"source": "local", "localPath": data_path},
                              "training": {"baseModel": "tiny", "maxSteps": 10},
                              "storage": {"existingClaim": "ws"},
                              "resources": {"gpus": 0, "cpu": "100m", "memory": "256Mi"},
                              "images": {"trainer": "ghcr.io/quran-finetune/stub-stage:test"},
                              "startupDeadlineSeconds": 120},
                 "variants": variants},
    }
    body["spec"].update(spec)
    return body


class Campaigns:
    """The campaign API of one test namespace, on top of the clusterkit Env."""

    def __init__(self, env):
        self.env = env

    def create(self, body: dict, **kw) -> dict:
        return self.env.custom.create_namespaced_custom_object(GROUP, VERSION, self.env.ns, CAMPAIGN_PLURAL, body, **kw)

    def get(self, name: str) -> dict:
        return self.env.custom.get_namespaced_custom_object(GROUP, VERSION, self.env.ns, CAMPAIGN_PLURAL, name)

    def wait_phase(self, name: str, phases: tuple, timeout: float) -> dict:
        def check():
            obj = self.get(name)
            return obj if (obj.get("status") or {}).get("phase") in phases else None
        return self.env.wait(check, timeout, f"campaign {name} in {phases}", interval=1.0)

    def children(self, name: str | None = None) -> list[dict]:
        selector = f"{LABEL_CAMPAIGN}={name}" if name else LABEL_CAMPAIGN
        return self.env.custom.list_namespaced_custom_object(GROUP, VERSION, self.env.ns, "quranfinetunes",
                                                             label_selector=selector)["items"]

    def events(self, name: str, reasons: set[str]) -> list:
        """The campaign's events, once `reasons` are among them (clusterkit.Env.events_once)."""
        return self.env.events_once(name, reasons, kind="QuranFineTuneCampaign")

    def report_input(self, name: str) -> dict:
        pods = self.env.core.list_namespaced_pod(self.env.ns, label_selector=f"{LABEL_CAMPAIGN}={name},"
                                                                            "quranft.io/stage=report").items
        for pod in pods:
            log = self.env.core.read_namespaced_pod_log(pod.metadata.name, self.env.ns)
            for line in log.splitlines():
                if line.startswith("CAMPAIGN_INPUT "):
                    return json.loads(line[len("CAMPAIGN_INPUT "):])
        raise AssertionError(f"no report input in the logs of {[p.metadata.name for p in pods]}")

    def release(self) -> None:
        """Delete campaigns and children while the operator runs (it removes kopf's finalizers), then strip what
        is left so the namespace can go."""
        custom, ns = self.env.custom, self.env.ns
        for plural in (CAMPAIGN_PLURAL, "quranfinetunes"):
            try:
                custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, plural)
            except ApiException:
                pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
                custom.list_namespaced_custom_object(GROUP, VERSION, ns, p)["items"]
                for p in (CAMPAIGN_PLURAL, "quranfinetunes")):
            time.sleep(1)
        self.env.stop_operator()
        for plural in (CAMPAIGN_PLURAL, "quranfinetunes"):
            for item in custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]:
                custom.patch_namespaced_custom_object(GROUP, VERSION, ns, plural, item["metadata"]["name"],
                                                      {"metadata": {"finalizers": None}})


@pytest.fixture(scope="module")
def campaign_crd(installed):
    return installed  # the `installed` fixture (access.install) applies both CRDs


@pytest.fixture
def camp(campaign_crd, env):
    env.claim()
    c = Campaigns(env)
    yield c
    c.release()


class Receiver:
    """A local webhook receiver: every POST's headers and body."""

    def __init__(self):
        self.posts: list[tuple[dict, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                outer.posts.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class ChildWatcher:
    """Polls the children of a namespace: the most of them preparing or training at once, and every uid seen per
    child name (a child deleted and created again counts twice)."""

    SLOT_FREE = ("Benchmarking", "Succeeded", "Failed", "Stopped")

    def __init__(self, camp: Campaigns, name: str):
        self.camp, self.name = camp, name
        self.max_active, self.uids = 0, defaultdict(set)
        self.report_jobs: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _loop(self):
        while not self._stop.is_set():
            try:
                kids = self.camp.children(self.name)
                active = 0
                for k in kids:
                    self.uids[k["metadata"]["name"]].add(k["metadata"]["uid"])
                    trained = (condition(k, "Trained") or {}).get("status") == "True"
                    if (k.get("status") or {}).get("phase") not in self.SLOT_FREE and not trained:
                        active += 1
                self.max_active = max(self.max_active, active)
                for j in self.camp.env.batch.list_namespaced_job(
                        self.camp.env.ns, label_selector=f"{LABEL_CAMPAIGN}={self.name},quranft.io/stage=report").items:
                    self.report_jobs.add(j.metadata.uid)
            except Exception:  # noqa: BLE001  a failed poll is retried
                pass
            self._stop.wait(0.3)


def _api_error(camp: Campaigns, body: dict) -> str:
    try:
        camp.create(body)
    except ApiException as exc:
        return json.loads(exc.body).get("message", "")
    camp.env.custom.delete_namespaced_custom_object(GROUP, VERSION, camp.env.ns, CAMPAIGN_PLURAL,
                                                    body["metadata"]["name"])
    return "accepted"


def test_bad_campaigns_are_refused_and_create_no_child(camp):
    env = camp.env
    base = lambda name, variants, **spec: campaign_body(name, variants, {}, **spec)  # noqa: E731
    refused = {
        "duplicate names": (base("dup", [{"name": "a"}, {"name": "a"}]), "variant names must be unique"),
        "empty search": (base("s", [], search={"fields": {"training.seed": []}}), "should have at least 1 items"),
        "random without maxTrials": (base("r", [], search={"algorithm": "random", "fields": {"training.seed": [1]}}),
                                     "a random search needs maxTrials"),
        "two baselines": (base("b", [{"name": "a"}], baseline={"baseModel": True, "resultsPath": "/x"}),
                          "baseline needs exactly one of"),
        "child name too long": (base("c" * 40, [{"name": "v" * 12}]), "at most 52 characters"),
        "nothing to run": (base("n", []), "a campaign needs variants or a search"),
    }
    failures = [f"{label}: {message[:300]}" for label, (body, expected) in refused.items()
                if expected not in (message := _api_error(camp, body))]
    assert failures == []

    # The dry run: an unknown field and a rule of the QuranFineTune schema, in two variants of one campaign.
    env.start_operator()
    camp.create(campaign_body("bad", [{"name": "ok"}, {"name": "typo", "overrides": {"training.maxStep": 5}},
                                      {"name": "mem", "overrides": {"resources.memory": "lots"}}], {}))
    # A baseline on another claim: refused before any child exists.
    env.create({"apiVersion": f"{GROUP}/{VERSION}", "kind": "QuranFineTune",
                "metadata": {"name": "elsewhere", "annotations": {COMMAND_ANNOTATION: json.dumps(stub_commands())}},
                "spec": {"data": {"source": "local", "localPath": "/workspace/synth"},
                         "training": {"baseModel": "tiny", "maxSteps": 10}, "storage": {"existingClaim": "other"},
                         "resources": {"gpus": 0, "cpu": "100m", "memory": "256Mi"}}})
    camp.create(campaign_body("otherclaim", [{"name": "a"}], {}, baseline={"qftRef": {"name": "elsewhere"}}))
    bad = camp.wait_phase("bad", ("Failed",), 60)
    other = camp.wait_phase("otherclaim", ("Failed",), 60)
    message = condition(bad, "VariantsValid")["message"]
    assert bad["status"]["reason"] == "InvalidVariants", bad["status"]
    assert 'unknown field "spec.training.maxStep"' in message and "variant typo" in message, message
    assert "variant mem" in message and "resources.memory" in message, message
    assert "variant ok" not in message
    assert other["status"]["reason"] == "InvalidBaseline"
    assert "uses claim other" in condition(other, "VariantsValid")["message"]
    assert camp.children() == []
    assert any(e.reason == "InvalidVariants" and e.type == "Warning" for e in camp.events("bad", {"InvalidVariants"}))


def test_parallelism_promotion_of_the_improving_variant_and_one_signed_webhook(camp):
    env = camp.env
    env.core.create_namespaced_secret(env.ns, {"metadata": {"name": "hook"}, "data": {
        "key": base64.b64encode(HMAC_KEY).decode()}})
    receiver = Receiver()
    try:
        variants = [{"name": "a"}, {"name": "b"}, {"name": "c"},
                    {"name": "own-data", "overrides": {"data.localPath": "/workspace/synth-other"}}]
        verdicts = {"a": ("neutral", 0.95), "b": ("improvement", 0.8), "c": ("improvement", 0.85),
                    "own-data": ("regression", 0.4)}
        body = campaign_body("win", variants, verdicts, parallelism=2,
                             notify={"url": receiver.url, "secretRef": {"name": "hook", "key": "key"}})
        # Its report Job runs the real `quranft benchmark campaign-report` (nothing to promote, so no model
        # files are needed): the controller's input is what the report's parser accepts.
        none_improve = campaign_body("flat", [{"name": "x"}, {"name": "y"}],
                                     {"x": ("neutral", 0.9), "y": ("regression", 0.3)}, parallelism=2,
                                     # its own data spec: sharing win's, either campaign's child could prepare
                                     # first and win's prepared-count check would depend on the race
                                     report_stub=False, data_path="/workspace/synth-flat")
        started = time.monotonic()
        with ChildWatcher(camp, "win") as watcher:
            env.start_operator()
            camp.create(body)
            camp.create(none_improve)
            win = camp.wait_phase("win", ("Succeeded", "Failed"), 300)
            flat = camp.wait_phase("flat", ("Succeeded", "Failed"), 120)
        print(f"campaign 'win' (4 variants, parallelism 2) took {time.monotonic() - started:.1f} s")
        s = win["status"]
        assert s["phase"] == "Succeeded", s
        assert watcher.max_active == 2, watcher.max_active  # never more than parallelism, and it was used
        assert {v["name"]: v["phase"] for v in s["variants"]} == {n: "Succeeded" for n in verdicts}
        assert s["done"] == "4/4" and s["corpusHash"] == "corpus-1" and s["claim"] == "ws"
        assert s["promotion"]["variant"] == "c" and s["production"]["variant"] == "c"
        assert s["production"]["child"] == "win-c" and s["production"]["modelPath"].endswith("/win/model.nemo")
        assert s["report"]["path"].endswith("report.md") and s["report"]["plots"]
        assert condition(win, "Promoted")["status"] == "True"
        assert [e.reason for e in camp.events("win", {"Promoted"})].count("Promoted") == 1
        # Children: owned, same claim and baseline; the data variant prepared its own copy, the others shared one.
        kids = {k["metadata"]["name"]: k for k in camp.children("win")}
        assert set(kids) == {"win-a", "win-b", "win-c", "win-own-data"}
        for k in kids.values():
            assert k["metadata"]["ownerReferences"][0]["uid"] == win["metadata"]["uid"]
            assert k["spec"]["storage"]["existingClaim"] == "ws"
            assert k["spec"]["benchmark"]["baseline"] == {"baseModel": True}
        prepared = {n for n in kids if env.jobs(run=n, stage="prepare")}
        assert "win-own-data" in prepared and len(prepared) == 2, prepared
        assert sum(condition(k, "DataReady")["reason"] == "ReusedFromSibling" for k in kids.values()) == 2
        # The report Job got the contract's input.
        doc = camp.report_input("win")
        assert doc["promote"] == "c" and doc["corpusHash"] == "corpus-1" and doc["baseline"] == {"baseModel": True}
        assert doc["campaign"]["uid"] == win["metadata"]["uid"]
        assert [v["name"] for v in doc["variants"]] == list(verdicts)
        assert {v["name"]: v["verdict"] for v in doc["variants"]} == {n: x[0] for n, x in verdicts.items()}
        # One signed summary.
        env.wait(lambda: camp.get("win")["status"].get("notified", {}).get("finished"), 60,
                 "the webhook delivery recorded")
        time.sleep(2)
        assert len(receiver.posts) == 1, receiver.posts
        headers, raw = receiver.posts[0]
        assert campaign_notify.verify(HMAC_KEY, raw, headers["X-Quranft-Signature"])
        assert headers["X-Quranft-Delivery"] == f"{win['metadata']['uid']}.finished"
        payload = json.loads(raw)
        assert payload["production"]["variant"] == "c" and payload["phase"] == "Succeeded"
        assert camp.get("win")["status"]["notified"]["finished"]["responseStatus"] == 200
        # Nothing improved: nothing promoted, and the status says so.
        assert flat["status"]["phase"] == "Succeeded" and "production" not in flat["status"]
        assert condition(flat, "Promoted")["reason"] == "NoImprovement"
        assert flat["status"]["report"]["path"].endswith("report.md") and len(flat["status"]["report"]["plots"]) == 2
    finally:
        receiver.close()


def test_operator_sigkills_during_a_campaign_keep_children_and_the_winner(camp, request):
    seed = request.config.getoption("seed", default=None)
    seed = int(seed if seed is not None else os.environ.get("QURANFT_SEED", 20260707))
    rng = random.Random(seed)
    env = camp.env
    receiver = Receiver()
    try:
        verdicts = {"a": ("improvement", 0.7), "b": ("improvement", 0.9), "c": ("neutral", 0.99)}
        body = campaign_body("chaos", [{"name": n} for n in verdicts], verdicts, parallelism=2,
                             notify={"url": receiver.url})
        phases = []
        with ChildWatcher(camp, "chaos") as watcher:
            env.start_operator()
            camp.create(body)
            # Seeded moments: a seeded phase of the campaign (the first passes, children running, the report, the
            # webhook delivery after the end), then a seeded offset into it.
            order = ("Pending", "Running", "Reporting", "Succeeded")
            for target in sorted(rng.choices(order, k=KILLS), key=order.index):
                env.wait(lambda: order.index((camp.get("chaos").get("status") or {}).get("phase") or "Pending")
                         >= order.index(target), 120, f"campaign phase {target}", interval=0.2)
                time.sleep(rng.uniform(0.0, 1.5))
                phases.append((camp.get("chaos").get("status") or {}).get("phase"))
                env.kill_operator()
                time.sleep(rng.uniform(0.0, 2.0))
                env.start_operator()
            final = camp.wait_phase("chaos", ("Succeeded", "Failed"), 240)
            env.wait(lambda: camp.get("chaos")["status"].get("notified", {}).get("finished"), 90, "the delivery")
        print(f"chaos seed={seed}: {KILLS} SIGKILLs at campaign phases {phases}; children "
              f"{ {n: len(u) for n, u in watcher.uids.items()} } uids; report Jobs {len(watcher.report_jobs)}")
        s = final["status"]
        assert s["phase"] == "Succeeded", s
        assert {n: len(u) for n, u in watcher.uids.items()} == {"chaos-a": 1, "chaos-b": 1, "chaos-c": 1}
        assert len(watcher.report_jobs) == 1
        assert s["production"]["variant"] == "b"  # the best improvement, as without any kill
        deliveries = {h["X-Quranft-Delivery"] for h, _ in receiver.posts}
        assert deliveries == {f"{final['metadata']['uid']}.finished"}
    finally:
        receiver.close()


def test_early_stopping_stops_the_variant_that_trails_the_median(camp):
    env = camp.env
    steps = 20
    verdicts = {"good": ("improvement", 0.9), "fine": ("neutral", 0.8), "broken": ("regression", 0.1)}
    body = campaign_body("early", [{"name": n} for n in verdicts], verdicts, parallelism=3,
                         earlyStopping={"rule": "MedianStop", "minStep": 3, "margin": 0.05})
    per_variant = json.loads(body["metadata"]["annotations"][VARIANT_COMMANDS_ANNOTATION])
    for name, wer in (("good", 0.3), ("fine", 0.35), ("broken", 0.95)):
        per_variant[name]["train"] = train_stub(16, steps, wer)
    body["metadata"]["annotations"][VARIANT_COMMANDS_ANNOTATION] = json.dumps(per_variant)
    env.start_operator("--progress-interval", "1")
    camp.create(body)
    final = camp.wait_phase("early", ("Succeeded", "Failed"), 240)
    s = final["status"]
    by_name = {v["name"]: v for v in s["variants"]}
    print({n: (v["phase"], v.get("steps"), v.get("stoppedReason")) for n, v in by_name.items()})
    broken = by_name["broken"]
    assert broken["phase"] == "Stopped" and broken["stoppedReason"].startswith("MedianStop at step")
    assert broken["steps"] < steps and broken["valWerHistory"][-1][1] == 0.95
    child = env.get("early-broken")
    assert child["status"]["phase"] == "Stopped" and condition(child, "Stopped")["status"] == "True"
    assert by_name["good"]["phase"] == by_name["fine"]["phase"] == "Succeeded"
    assert by_name["good"]["steps"] == steps
    assert s["phase"] == "Succeeded" and s["production"]["variant"] == "good"
    assert camp.report_input("early")["variants"][2]["stoppedReason"] == broken["stoppedReason"]
