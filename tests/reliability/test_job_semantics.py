"""Item 3: Job semantics on the real Job controller: retries, fail-fast exit codes, unreadable benchmark
termination messages, deadlines, and a Job removed while the operator was down. One operator, runs in
parallel (each with its own data spec, so each has its own stages)."""
from __future__ import annotations

import time

import pytest
from clusterkit import condition, resource, stub_commands

pytestmark = pytest.mark.cluster
QUICK = dict(prepare_seconds=0.3, train_seconds=1.0, bench_seconds=0.3)
GARBAGE = "open('/dev/termination-log', 'w').write('verdict: improvement (this is not JSON) {')"
# Valid JSON, but 6 KB: the kubelet (here: the node agent) cuts it at 4096 bytes.
HUGE = ("import json; open('/dev/termination-log', 'w').write(json.dumps({'ok': True, 'stage': 'benchmark', "
        "'verdict': 'improvement', 'metrics': {'recall': 0.9}, 'notes': 'x' * 6000}))")


def _run(name: str, index: int, commands: dict, **spec) -> dict:
    return resource(name, commands=commands, data={"source": "local", "localPath": f"/workspace/sem-{index}"}, **spec)


def _stage_pods(env, run: str, stage: str) -> list:
    return [p for p in env.pods(run) if p.metadata.labels.get("quranft.io/stage") == stage]


def test_job_semantics(env):
    env.claim()
    env.start_operator()
    commands = {
        "retry": stub_commands(**QUICK, exit_codes={"train": 4}),
        "cfgerr": stub_commands(**QUICK, exit_codes={"benchmark": 2}),
        "garbage": dict(stub_commands(**QUICK), benchmark=["python", "-c", GARBAGE]),
        "huge": dict(stub_commands(**QUICK), benchmark=["python", "-c", HUGE]),
        "deadline": stub_commands(prepare_seconds=0.3, train_seconds=120.0),
        "lost": stub_commands(prepare_seconds=0.3, train_seconds=120.0),
    }
    specs = {"retry": {"resources": {"gpus": 0, "cpu": "100m", "memory": "256Mi", "backoffLimit": 2}},
             "deadline": {"activeDeadlineSeconds": 15}}
    for i, (name, cmd) in enumerate(commands.items()):
        env.create(_run(name, i, cmd, **specs.get(name, {})))

    # A Job removed while the operator is down (as a TTL controller would) -> an explicit condition.
    env.wait(lambda: [p for p in _stage_pods(env, "lost", "train") if p.status.phase == "Running"], 120,
             "lost's training pod to run")
    env.kill_operator()
    env.batch.delete_namespaced_job("lost-train", env.ns, propagation_policy="Background")
    env.wait(lambda: not env.jobs("lost", "train"), 30, "lost-train to be gone")
    env.start_operator()

    results = {name: env.wait_phase(name, ("Succeeded", "Failed"), 240) for name in commands}
    summary = {n: (o["status"]["phase"], condition(o, "Failed")["reason"] if condition(o, "Failed") else None)
               for n, o in results.items()}
    print(f"\njob semantics: {summary}")

    # backoffLimit N -> exactly N+1 pods, then Failed.
    assert len(_stage_pods(env, "retry", "train")) == 3
    assert env.batch.read_namespaced_job("retry-train", env.ns).status.failed == 3
    assert summary["retry"] == ("Failed", "TrainingError"), results["retry"]["status"]
    # ConfigError exit code 2 -> one pod, never retried.
    assert len(_stage_pods(env, "cfgerr", "benchmark")) == 1
    assert summary["cfgerr"] == ("Failed", "ConfigError")
    # Benchmark termination messages the operator cannot read -> a clear condition.
    assert summary["garbage"] == ("Failed", "VerdictUnparseable")
    assert condition(results["garbage"], "VerdictUnparseable")["status"] == "True"
    assert summary["huge"] == ("Failed", "VerdictTruncated")
    assert "4 KB" in condition(results["huge"], "VerdictTruncated")["message"]
    # activeDeadlineSeconds -> DeadlineExceeded; a Job that vanished -> JobLost.
    assert summary["deadline"] == ("Failed", "DeadlineExceeded")
    assert summary["lost"] == ("Failed", "JobLost")
    assert "disappeared" in condition(results["lost"], "Failed")["message"]

    # No crash loop: two more reconcile intervals later nothing was re-run or rewritten.
    before = {n: (env.get(n)["status"], len(env.pods(n)), len(env.jobs(n))) for n in commands}
    time.sleep(12)
    after = {n: (env.get(n)["status"], len(env.pods(n)), len(env.jobs(n))) for n in commands}
    assert after == before
    assert env.proc.poll() is None
    assert len(_stage_pods(env, "garbage", "benchmark")) == 1 and len(_stage_pods(env, "huge", "benchmark")) == 1
    log = env.log_path.read_text(errors="replace")
    handler_errors = [line for line in log.splitlines() if "failed with an exception" in line
                      and any(f"/{n}]" in line for n in commands)]
    assert handler_errors == [], handler_errors[:5]


def test_a_job_kueue_keeps_suspended_is_not_finished(env):
    """With spec.queueName every stage Job is created suspended for Kueue to admit. While it stays suspended
    (Kueue's answer to "no quota"), the run waits in Queued: neither the operator's startup deadline nor the
    Job's activeDeadlineSeconds counts that time. Kueue is not installed here; the test admits each Job the
    way Kueue does (spec.suspend -> false)."""
    env.claim()
    env.start_operator()
    env.create(_run("queued", 99, stub_commands(**QUICK), queueName="team-a", startupDeadlineSeconds=5,
                    activeDeadlineSeconds=20))
    env.wait(lambda: env.jobs("queued", "prepare"), 60, "the suspended prepare Job")
    env.wait_phase("queued", "Queued", 30)  # the pass that created the Job said PreparingData
    held_until = time.monotonic() + 30  # well past both deadlines
    while time.monotonic() < held_until:
        obj = env.get("queued")
        assert obj["status"].get("phase") == "Queued", obj["status"]
        time.sleep(2)
    admitted = condition(obj, "QuotaAdmitted")
    assert admitted["status"] == "False" and admitted["reason"] == "WaitingForKueue", admitted
    assert env.pods("queued") == [] and env.jobs("queued", "prepare")[0].spec.suspend is True

    admitted_stages = []
    for stage in ("prepare", "train", "benchmark"):
        job = env.wait(lambda: env.jobs("queued", stage), 120, f"the {stage} Job")[0]
        assert job.spec.suspend is True, f"{stage} Job was not created suspended"
        env.batch.patch_namespaced_job(job.metadata.name, env.ns, {"spec": {"suspend": False}})
        admitted_stages.append(stage)
    final = env.wait_phase("queued", ("Succeeded", "Failed"), 120)
    print(f"\nkueue-held run: Queued for 30 s past both deadlines, then admitted {admitted_stages}: "
          f"{final['status']['phase']}")
    assert final["status"]["phase"] == "Succeeded", final["status"]
