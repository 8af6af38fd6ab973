"""Pure functions from the agent's view of a pod's containers to the Pod status the API expects."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

MESSAGE_CAP = 4096  # the kubelet's cap on a termination message
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048  # FallbackToLogsOnError: last 80 lines or 2 KiB, the smaller


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class ContainerRecord:
    """What the agent knows about one container: its current state and its previous run."""

    name: str
    image: str
    init: bool = False
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict = field(default_factory=dict)
    restart_count: int = 0
    container_id: str = ""

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def terminated(self) -> dict | None:
        return self.state.get("terminated")

    def to_status(self) -> dict:
        status = {"name": self.name, "image": self.image, "imageID": "", "ready": self.running and not self.init,
                  "started": self.running, "restartCount": self.restart_count, "state": self.state,
                  "lastState": self.last_state}
        if self.container_id:
            status["containerID"] = self.container_id
        return status


def termination_message(file_text: str, exit_code: int, policy: str, log_tail: str) -> str:
    """The message the kubelet reports: the file's content, or the log tail when the policy allows."""
    message = file_text[:MESSAGE_CAP]
    if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
        lines = log_tail.splitlines(keepends=True)[-FALLBACK_LINES:]
        message = "".join(lines)[-FALLBACK_BYTES:]
    return message


def terminated_state(exit_code: int, started_at: str, message: str, signal: int | None = None,
                     reason: str | None = None) -> dict:
    """`reason` overrides Completed/Error, e.g. OOMKilled (the kubelet reports it whatever the exit code)."""
    state = {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error"),
             "startedAt": started_at, "finishedAt": now()}
    if signal:
        state["signal"] = signal
    if message:
        state["message"] = message
    return {"terminated": state}


def pod_phase(init: list[ContainerRecord], main: list[ContainerRecord], restart_policy: str,
              failed_init: bool) -> str:
    """Pending until the main containers start; Succeeded/Failed once none can run again."""
    if failed_init:
        return "Failed"
    if not main or any(not c.running and not c.terminated for c in main):
        # waiting containers: either not started yet (Pending) or waiting for a restart (Running)
        if any(c.last_state or c.running or c.terminated for c in main):
            return "Running"
        return "Pending"
    if any(c.running for c in main):
        return "Running"
    codes = [c.terminated["exitCode"] for c in main]
    if restart_policy == "Always":
        return "Running"
    if restart_policy == "OnFailure" and any(code != 0 for code in codes):
        return "Running"
    return "Succeeded" if all(code == 0 for code in codes) else "Failed"


def _condition(kind: str, ok: bool, since: dict[str, str], reason: str | None = None) -> dict:
    cond = {"type": kind, "status": "True" if ok else "False",
            "lastTransitionTime": since.setdefault(f"{kind}={ok}", now()), "lastProbeTime": None}
    if reason and not ok:
        cond["reason"] = reason
    return cond


AGENT_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")


def foreign_conditions(server_conditions: list[dict] | None) -> list[dict]:
    """The pod conditions other components own, e.g. DisruptionTarget (added by the API server on
    eviction, the scheduler on preemption): the kubelet carries them over into every status it writes."""
    return [c for c in server_conditions or [] if c.get("type") not in AGENT_CONDITIONS]


def pod_status(phase: str, init: list[ContainerRecord], main: list[ContainerRecord], start_time: str,
               since: dict[str, str], reason: str | None = None, message: str | None = None,
               keep_conditions: list[dict] | None = None) -> dict:
    """The whole status object (sent as a JSON merge patch, so the lists replace the server's; hence
    `keep_conditions`, the server's foreign_conditions, go back in unchanged)."""
    initialized = all(c.terminated and c.terminated["exitCode"] == 0 for c in init)
    ready = bool(main) and all(c.running for c in main) and phase == "Running"
    done = phase in ("Succeeded", "Failed")
    conditions = [
        _condition("PodReadyToStartContainers", True, since),
        _condition("Initialized", initialized, since, "ContainersNotInitialized"),
        _condition("Ready", ready, since, "PodCompleted" if done else "ContainersNotReady"),
        _condition("ContainersReady", ready, since, "PodCompleted" if done else "ContainersNotReady"),
        _condition("PodScheduled", True, since),
        *(dict(c) for c in keep_conditions or []),
    ]
    status = {"phase": phase, "conditions": conditions, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
              "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "startTime": start_time,
              "containerStatuses": [c.to_status() for c in main], "qosClass": None,
              "reason": reason, "message": message}
    if init:
        status["initContainerStatuses"] = [c.to_status() for c in init]
    return {k: v for k, v in status.items() if k != "qosClass"}
