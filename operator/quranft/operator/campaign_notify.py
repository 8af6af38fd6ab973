"""The campaign webhook: a JSON summary, signed with HMAC-SHA256, POSTed once per event.

The operator never reads Secrets (its RBAC has none; tests/reliability/test_security.py holds it to that), so the
POST is made by a short delivery Job (campaign_jobs.notify_job) that gets the HMAC key as a mounted file, the way
the hub token reaches stage pods. The Job runs SENDER, a standard-library-only script, on the template's trainer
image. Headers:

- `X-Quranft-Event`: `finished` (the campaign ended; the summary includes the promotion, if any) or `promoted`
  (a Manual promotion after the end);
- `X-Quranft-Delivery`: `<campaign uid>.<event>`, the same on every retry and after an operator restart, so a
  receiver that saw it already can drop the repeat;
- `X-Quranft-Signature`: `sha256=<hex HMAC-SHA256 of the raw body>` with the secret's key (only with
  notify.secretRef). Verify with `verify()` or any HMAC library, comparing in constant time.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Mapping

SIGNATURE_HEADER = "X-Quranft-Signature"
DELIVERY_HEADER = "X-Quranft-Delivery"
EVENT_HEADER = "X-Quranft-Event"
VARIANT_KEYS = ("name", "child", "phase", "verdict", "reason", "primaryMetric", "stoppedReason")


def delivery_id(uid: str, event: str) -> str:
    return f"{uid}.{event}"


def summary(meta: Mapping[str, Any], status: Mapping[str, Any], event: str) -> dict[str, Any]:
    """What the receiver gets: the campaign's outcome, the promotion and one line per variant."""
    return {
        "event": event,
        "deliveryId": delivery_id(meta["uid"], event),
        "campaign": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
        "phase": status.get("phase"),
        "reason": status.get("reason"),
        "done": status.get("done"),
        "best": status.get("best"),
        "verdict": status.get("verdict"),
        "corpusHash": status.get("corpusHash"),
        "promotion": status.get("promotion"),
        "production": status.get("production"),
        "report": status.get("report"),
        "variants": [{k: v[k] for k in VARIANT_KEYS if v.get(k) is not None} for v in status.get("variants") or []],
    }


def body_bytes(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes POSTed and signed (stored as is in the delivery Job's ConfigMap)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signature(key: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(key: bytes, body: bytes, header: str | None) -> bool:
    """True when `header` is the body's signature with `key` (constant-time comparison)."""
    return bool(header) and hmac.compare_digest(signature(key, body), str(header))


# Run by the delivery Job as `python -c SENDER PAYLOAD_FILE URL [KEY_FILE]` (standard library only, so any of
# the project's images can run it): three attempts 1 s and 2 s apart. Exit 0 on a 2xx answer; 2 on a 4xx one
# (the receiver refused it: a retry would not help, and the Job's podFailurePolicy does not retry exit 2); 1
# when no attempt got through. The summary line goes to the termination log (QURANFT_TERMINATION_LOG, else
# /dev/termination-log).
SENDER = r"""
import hashlib, hmac, json, os, sys, time, urllib.error, urllib.request
payload_file, url = sys.argv[1], sys.argv[2]
body = open(payload_file, "rb").read()
doc = json.loads(body)
headers = {"Content-Type": "application/json", "User-Agent": "quranft-operator",
           "X-Quranft-Event": doc["event"], "X-Quranft-Delivery": doc["deliveryId"]}
if len(sys.argv) > 3:
    key = open(sys.argv[3], "rb").read()
    headers["X-Quranft-Signature"] = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
code, status, attempts = 1, None, 0
for attempts in range(1, 4):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers, method="POST"),
                                    timeout=15) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        print("attempt %d: %s" % (attempts, exc), flush=True)
        status = None
    if status is not None and 200 <= status < 300:
        code = 0
        break
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        code = 2
        break
    if attempts < 3:
        time.sleep(attempts)
summary = {"ok": code == 0, "stage": "notify", "deliveryId": doc["deliveryId"], "status": status,
           "attempts": attempts}
if code:
    summary["reason"], summary["message"] = "NotifyFailed", "%s answered %s" % (url, status)
print(json.dumps(summary), flush=True)
log = os.environ.get("QURANFT_TERMINATION_LOG") or "/dev/termination-log"  # docs/contracts.md
try:
    with open(log, "w") as out:
        out.write(json.dumps(summary))
except OSError:
    pass
sys.exit(code)
"""
