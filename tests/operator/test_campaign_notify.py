"""campaign_notify: the signature, the summary, and the delivery script against a real local HTTP server."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from campaignkit import campaign

from quranft.operator import campaign_jobs, campaign_notify
from quranft.operator.settings import OperatorSettings


def test_signature_is_hmac_sha256_rfc4231_case_2():
    # RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
    assert campaign_notify.signature(b"Jefe", b"what do ya want for nothing?") == \
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    body = campaign_notify.body_bytes({"a": 1})
    good = campaign_notify.signature(b"k", body)
    assert campaign_notify.verify(b"k", body, good)
    assert not campaign_notify.verify(b"k", body + b" ", good)
    assert not campaign_notify.verify(b"other", body, good)
    assert not campaign_notify.verify(b"k", body, None)


def test_summary_names_the_campaign_the_promotion_and_each_variant():
    meta = {"name": "c", "namespace": "ns", "uid": "u1"}
    status = {"phase": "Succeeded", "done": "2/2", "best": "a", "verdict": "improvement",
              "promotion": {"variant": "a", "reason": "Promoted"}, "production": {"variant": "a"},
              "variants": [{"name": "a", "child": "c-a", "phase": "Succeeded", "verdict": "improvement",
                            "metrics": {"recall": 1}, "primaryMetric": {"name": "recall", "value": 1}},
                           {"name": "b", "child": "c-b", "phase": "Stopped", "stoppedReason": "MedianStop"}]}
    doc = campaign_notify.summary(meta, status, "finished")
    assert doc["deliveryId"] == "u1.finished" and doc["event"] == "finished"
    assert doc["campaign"] == meta and doc["production"] == {"variant": "a"}
    assert doc["variants"][0] == {"name": "a", "child": "c-a", "phase": "Succeeded", "verdict": "improvement",
                                  "primaryMetric": {"name": "recall", "value": 1}}
    assert doc["variants"][1]["stoppedReason"] == "MedianStop"


class _Receiver:
    def __init__(self, answers):
        self.answers, self.requests = list(answers), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body))
                self.send_response(outer.answers.pop(0) if outer.answers else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _send(tmp_path, url, payload, key: bytes | None):
    payload_file = tmp_path / "payload.json"
    payload_file.write_bytes(campaign_notify.body_bytes(payload))
    args = [sys.executable, "-c", campaign_notify.SENDER, str(payload_file), url]
    if key is not None:
        (tmp_path / "key").write_bytes(key)
        args.append(str(tmp_path / "key"))
    log = tmp_path / "termination-log"
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60,
                          env={"QURANFT_TERMINATION_LOG": str(log), "PATH": "/usr/bin:/bin"})
    return proc.returncode, json.loads(log.read_text())


@pytest.mark.parametrize("answers, code, calls, ok", [([204], 0, 1, True), ([500, 200], 0, 2, True),
                                                      ([403], 2, 1, False), ([503, 503, 503], 1, 3, False)])
def test_the_delivery_script_signs_posts_and_retries_only_what_can_succeed(tmp_path, answers, code, calls, ok):
    payload = campaign_notify.summary({"name": "c", "namespace": "ns", "uid": "u1"}, {"phase": "Succeeded"},
                                      "finished")
    with _Receiver(answers) as receiver:
        rc, summary = _send(tmp_path, receiver.url, payload, b"s3cret")
    assert rc == code and summary["ok"] is ok and summary["attempts"] == calls
    assert summary["status"] == answers[calls - 1] and summary["deliveryId"] == "u1.finished"
    assert len(receiver.requests) == calls
    for headers, body in receiver.requests:  # retries carry the same delivery id and the same signature
        assert headers["X-Quranft-Delivery"] == "u1.finished" and headers["X-Quranft-Event"] == "finished"
        assert campaign_notify.verify(b"s3cret", body, headers["X-Quranft-Signature"])
        assert json.loads(body) == payload


def test_without_a_secret_nothing_is_signed(tmp_path):
    with _Receiver([200]) as receiver:
        rc, _ = _send(tmp_path, receiver.url, {"event": "finished", "deliveryId": "x"}, None)
    assert rc == 0 and "X-Quranft-Signature" not in receiver.requests[0][0]


def test_the_delivery_job_mounts_the_key_and_never_the_operator():
    spec, meta = campaign(notify={"url": "https://hooks.example/q", "secretRef": {"name": "hmac", "key": "k"}})
    job = campaign_jobs.notify_job(spec, meta, "finished", OperatorSettings())
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["metadata"]["name"] == "c-notify-finished" and container["command"][:2] == ["python", "-c"]
    assert container["command"][-3:] == ["/etc/quranft-notify/payload.json", "https://hooks.example/q",
                                         "/var/run/secrets/quranft/notify/key"]
    secret = next(v for v in pod["volumes"] if "secret" in v)["secret"]
    assert secret == {"secretName": "hmac", "items": [{"key": "k", "path": "key"}]}
    assert pod["automountServiceAccountToken"] is False and container["securityContext"]["runAsNonRoot"] is True
    assert not any("env" in c and any("secretKeyRef" in str(e) for e in c["env"]) for c in pod["containers"])
    cm = campaign_jobs.notify_config_map(meta, "finished", {"event": "finished", "deliveryId": "d"})
    assert cm["metadata"]["name"] == "c-notify-finished-input"
    assert cm["data"]["payload.json"] == campaign_notify.body_bytes({"event": "finished", "deliveryId": "d"}).decode()
