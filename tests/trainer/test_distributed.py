"""Distributed training on CPU (gloo) with the tiny model: 2 ranks against 1 process, shards, who writes, resume
across world sizes, SIGTERM, rendezvous; and the placement/config rules as unit tests.

The 2-rank runs are real processes: two "nodes" started here with NODE_RANK 0/1 (the operator's multi-node path),
or one process whose second rank Lightning's launcher starts (devicesPerNode 2, the multi-GPU path).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddp_probe import BatchRecorder, read_records
from fixtures_model import (REPO, cli_command, cli_env, prepared_workspace, synth_112, wait_for,  # noqa: F401
                            write_config, run_config)
from quranft.contract.config import ConfigError, DistributedSpec, RunConfig, load_config
from quranft.trainer.distributed import (Placement, RendezvousTimeout, check_shards, is_launcher_child, placement,
                                         rendezvous_failure, resolve_backend)
from quranft.trainer.errors import EnvironmentProblem, classify
from quranft.trainer.metrics import HISTORY_KEYS, PROGRESS_PREFIX, ProgressReporter

PROBE = Path(__file__).with_name("ddp_probe.py")
STEPS = 6  # 8 training clips at a global batch of 4: 2 steps per epoch, 3 epochs
# Per-step loss of 2 ranks x batch 2 against 1 process x batch 4, relative. Not exact on CPU: torch's SyncBatchNorm
# is GPU-only, so each rank's BatchNorm normalises its own 2 clips (and pads them to their own longest). Measured
# here: at most 0.6 % (steps 1-6: 0.57, 0.60, 0.25, 0.37, 0.39, 0.10 %), while the loss itself falls 106 -> 33.
LOSS_TOLERANCE = 0.015


def short_run(workspace: Path, dataset: Path, name: str, **training) -> dict:
    doc = run_config(workspace, dataset, name, **{"maxSteps": STEPS, "batchSize": 2, "checkpointEveryNSteps": 3,
                                                  "valCheckInterval": 100, **training})
    doc["metrics"]["progressIntervalSeconds"] = 0.001  # a progress record for every step
    return doc


def history(run_dir: Path) -> dict[int, dict]:
    """progress_history.jsonl by step, the last record of a step winning (as its reader does)."""
    return {r["step"]: r for r in map(json.loads, (run_dir / "progress_history.jsonl").read_text().splitlines())}


def progress_lines(text: str) -> list[dict]:
    return [json.loads(line[len(PROGRESS_PREFIX):]) for line in text.splitlines() if line.startswith(PROGRESS_PREFIX)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=REPO, env=cli_env(**env), stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{proc.args} did not finish in {timeout}s:\n{log.read_text()[-3000:]}") from None


# --- the reference: one process, batch 4 -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def single(prepared_workspace, synth_112, tmp_path_factory):
    """One in-process run at batch 4 (world size 1, no DDP), recording its batches like the ranks do."""
    from quranft.trainer.train import train

    probe = tmp_path_factory.mktemp("probe-single")
    cfg = RunConfig.model_validate(short_run(prepared_workspace, synth_112 / "dataset", "dist-single", batchSize=4))
    started = time.monotonic()
    summary = train(cfg, log=lambda _: None, callbacks=[BatchRecorder(probe)])
    print(f"single process: {time.monotonic() - started:.1f}s")
    return cfg, summary, read_records(probe, 0)


# --- two "nodes" of one rank each, started here like the Indexed Job's pods ------------------------------------

@pytest.fixture(scope="module")
def pair(prepared_workspace, synth_112, tmp_path_factory):
    """nodes=2 x devicesPerNode=1 at batch 2 per rank (global batch 4). Rank 1 gets a workspace of its own whose
    data/ links to the prepared data: anything it wrote would land in its own runs/."""
    root = tmp_path_factory.mktemp("pair")
    other = root / "rank1-workspace"
    (other / "data").mkdir(parents=True)
    data_hash = RunConfig.model_validate(short_run(prepared_workspace, synth_112 / "dataset", "x")).data_dir.name
    (other / "data" / data_hash).symlink_to(prepared_workspace / "data" / data_hash)
    metrics_port = free_port()
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "QURANFT_PROBE_DIR": str(root / "probe")}
    procs = []
    started = time.monotonic()
    for rank, workspace in ((0, prepared_workspace), (1, other)):
        doc = short_run(workspace, synth_112 / "dataset", "dist-pair")
        doc["distributed"] = {"nodes": 2, "devicesPerNode": 1, "rendezvousTimeoutSeconds": 300}
        doc["metrics"]["port"] = metrics_port  # both ask for it; only rank 0 may serve it
        config = write_config(root / f"rank{rank}.json", doc)
        log = root / f"rank{rank}.log"
        argv = [sys.executable, str(PROBE), "train", "--config", str(config), "--termination-log",
                str(root / f"term{rank}.json")]
        procs.append((launch(argv, log, NODE_RANK=str(rank), **env), log))
    codes = [finish(proc, log) for proc, log in procs]
    print(f"2 ranks (2 processes in parallel): {time.monotonic() - started:.1f}s")
    logs = [log.read_text() for _, log in procs]
    assert codes == [0, 0], "\n\n".join(text[-3000:] for text in logs)
    run_dir = RunConfig.model_validate(short_run(prepared_workspace, synth_112 / "dataset", "dist-pair")).run_dir
    return {"root": root, "other": other, "logs": logs, "run_dir": run_dir, "metrics_port": metrics_port,
            "records": [read_records(root / "probe", rank) for rank in (0, 1)]}


@pytest.mark.slow  # processes that train (or wait to)
def test_two_ranks_give_the_loss_curve_of_one_process_at_the_same_global_batch(single, pair):
    _, summary, _ = single
    one, two = history(single[0].run_dir), history(pair["run_dir"])
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    diffs = {step: abs(two[step]["loss"] - one[step]["loss"]) / one[step]["loss"] for step in one}
    print("relative loss difference per step:", {s: f"{d:.4%}" for s, d in diffs.items()})
    assert max(diffs.values()) <= LOSS_TOLERANCE, (one, two)
    assert one[1]["loss"] > 2 * one[STEPS]["loss"]  # the curve moves far more than the tolerance
    assert [two[s]["lr"] for s in two] == [one[s]["lr"] for s in one]  # the LR is not scaled with the world size
    # The reported loss is the mean of the ranks' own losses (rank 0's alone would be half the batch).
    by_step = [{r["step"]: r["loss"] for r in recs} for recs in pair["records"]]
    for step in two:
        assert two[step]["loss"] == pytest.approx((by_step[0][step] + by_step[1][step]) / 2, rel=1e-6)
    assert two[STEPS]["samplesPerSecond"] > 0 and two[STEPS]["valWer"] is not None


@pytest.mark.slow  # processes that train (or wait to)
def test_each_rank_trains_on_its_own_shard_and_together_on_the_global_batch(single, pair):
    ranks = pair["records"]
    reference = {r["step"]: sorted(r["clips"]) for r in single[2]}
    assert [len(recs) for recs in ranks] == [STEPS, STEPS]
    assert {r["rank"] for r in ranks[0]} == {0} and {r["rank"] for r in ranks[1]} == {1}
    assert {r["pid"] for r in ranks[0]}.isdisjoint({r["pid"] for r in ranks[1]})  # two processes
    for a, b in zip(*ranks):
        assert a["step"] == b["step"] and len(a["clips"]) == len(b["clips"]) == 2
        assert not set(a["clips"]) & set(b["clips"]), (a, b)
        assert sorted(a["clips"] + b["clips"]) == reference[a["step"]]  # the same samples as 1 process
    for epoch in range(STEPS // 2):  # every epoch: each of the 8 clips exactly once, split over the two ranks
        seen = [c for recs in ranks for r in recs if r["epoch"] == epoch for c in r["clips"]]
        assert len(seen) == len(set(seen)) == 8


@pytest.mark.slow  # processes that train (or wait to)
def test_only_rank_zero_writes(pair):
    run_dir, logs = pair["run_dir"], pair["logs"]
    assert not (pair["other"] / "runs").exists()  # rank 1 wrote nothing into its workspace
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "model.nemo", "progress.json",
                                                         "progress_history.jsonl", "training_metadata.json"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-00000003.ckpt",
                                                                          "step-00000006.ckpt"]
    summary = json.loads((pair["root"] / "term0.json").read_text())
    assert summary["ok"] and summary["step"] == STEPS
    assert (summary["worldSize"], summary["globalBatchSize"], summary["nodes"], summary["devicesPerNode"]) == (2, 4, 2, 1)
    meta = json.loads((run_dir / "training_metadata.json").read_text())
    assert (meta["worldSize"], meta["globalBatchSize"], meta["nodes"], meta["devicesPerNode"]) == (2, 4, 2, 1)
    assert not (pair["root"] / "term1.json").exists()
    assert progress_lines(logs[0]) and not progress_lines(logs[1])
    assert all(d["worldSize"] == 2 for d in progress_lines(logs[0]))
    assert f"Prometheus metrics on :{pair['metrics_port']}/metrics" in logs[0]
    assert "Prometheus" not in logs[1] and "checkpoint:" not in logs[1]
    assert "global batch 4 = batchSize 2 x gradAccum 1 x 2 rank(s)" in logs[0]
    assert "[rank 1] train: rank 1 of 2 (node 1 of 2, local rank 0 of 1)" in logs[1]
    for line in (run_dir / "progress_history.jsonl").read_text().splitlines():
        assert tuple(json.loads(line)) == HISTORY_KEYS


@pytest.mark.slow  # trains
def test_a_checkpoint_of_two_ranks_resumes_on_one(single, pair, prepared_workspace, synth_112):
    from quranft.trainer.train import train

    cfg = RunConfig.model_validate(short_run(prepared_workspace, synth_112 / "dataset", "dist-2to1", batchSize=4))
    (cfg.run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(pair["run_dir"] / "checkpoints" / "step-00000003.ckpt", cfg.run_dir / "checkpoints")
    summary = train(cfg, log=lambda _: None)
    assert summary["resumedFromStep"] == 3 and summary["step"] == STEPS and summary["worldSize"] == 1
    one, resumed = history(single[0].run_dir), history(cfg.run_dir)
    assert sorted(resumed) == [4, 5, 6]  # the step count continued from the 2-rank checkpoint
    assert [resumed[s]["lr"] for s in (4, 5, 6)] == [one[s]["lr"] for s in (4, 5, 6)]


# --- Lightning's launcher: 2 local ranks in one "pod" ------------------------------------------------------------

@pytest.mark.slow  # processes that train (or wait to)
def test_a_checkpoint_of_one_rank_resumes_on_two_local_ranks(single, prepared_workspace, synth_112, tmp_path):
    """`python -m quranft.cli trainer train` with devicesPerNode 2: Lightning's launcher re-executes it for rank 1."""
    one_cfg = single[0]
    doc = short_run(prepared_workspace, synth_112 / "dataset", "dist-resume")
    doc["distributed"] = {"devicesPerNode": 2}
    cfg = RunConfig.model_validate(doc)
    (cfg.run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(one_cfg.run_dir / "checkpoints" / "step-00000003.ckpt", cfg.run_dir / "checkpoints")
    config, log, term = write_config(tmp_path / "cfg.json", doc), tmp_path / "train.log", tmp_path / "term.json"
    started = time.monotonic()
    proc = launch(cli_command("train", "--config", str(config), "--termination-log", str(term)), log)
    assert finish(proc, log) == 0, log.read_text()[-3000:]
    print(f"resume on 2 local ranks: {time.monotonic() - started:.1f}s")
    text, summary = log.read_text(), json.loads(term.read_text())
    assert summary["resumedFromStep"] == 3 and summary["step"] == STEPS and summary["worldSize"] == 2
    assert "[rank 1] train: rank 1 of 2 (node 0 of 1, local rank 1 of 2)" in text  # the launcher's rank 1
    assert "[rank 1] train: done at step 6" in text
    steps = [d["step"] for d in progress_lines(text)]
    assert steps[0] == 4 and steps[-1] == STEPS  # the step count continued from the checkpoint
    # The LR schedule continued too (a fresh one would restart its warmup at step 1).
    one, two = history(one_cfg.run_dir), history(cfg.run_dir)
    assert [two[s]["lr"] for s in (4, 5, 6)] == [one[s]["lr"] for s in (4, 5, 6)]


@pytest.mark.slow  # processes that train (or wait to)
def test_sigterm_to_one_rank_stops_both_with_one_checkpoint_and_exit_143(prepared_workspace, synth_112, tmp_path):
    """The console script with 2 local ranks; SIGTERM goes to rank 1 only (Lightning forwards only parent -> child,
    and each rank would stop on its own batch): both stop after the same batch, rank 0 saves, the pod exits 143."""
    doc = short_run(prepared_workspace, synth_112 / "dataset", "dist-sigterm", maxSteps=5000,
                    checkpointEveryNSteps=1000, valCheckInterval=1000)
    doc["metrics"]["progressIntervalSeconds"] = 0.5
    doc["distributed"] = {"devicesPerNode": 2}
    run_dir = RunConfig.model_validate(doc).run_dir
    config, log, term = write_config(tmp_path / "cfg.json", doc), tmp_path / "train.log", tmp_path / "term.json"
    console_script = Path(sys.executable).with_name("quranft")
    proc = launch([str(console_script), "trainer", "train", "--config", str(config), "--termination-log", str(term)],
                  log)
    try:
        def step() -> int:
            try:
                return json.loads((run_dir / "progress.json").read_text())["step"]
            except (OSError, ValueError, KeyError):
                return 0

        wait_for(lambda: step() >= 3, 300, proc, "training progress")
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1, children  # the launcher started rank 1
        rank1 = int(children[0])
        os.kill(rank1, signal.SIGTERM)
        assert proc.wait(120) == 143, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len(ckpts) == 1, ckpts  # nothing was due before step 1000: this one was written on SIGTERM, once
    stopped = int(ckpts[0][5:13])
    assert f"[rank 1] train: stopping at step {stopped}: SIGTERM" in text
    assert f"[rank 0] train: stopping at step {stopped}: a peer rank received SIGTERM" in text
    assert progress_lines(text)[-1]["lastCheckpointStep"] == stopped
    summary = json.loads(term.read_text())
    assert summary["reason"] == "Preempted" and f"step {stopped}" in summary["message"]
    # Rank 1 leaves after the pod's main process (so Lightning's observer never SIGKILLs it first).
    wait_for(lambda: not Path(f"/proc/{rank1}").exists() or "zombie" in Path(f"/proc/{rank1}/status").read_text(),
             60, what="rank 1 to exit")
    assert not (run_dir / "model.nemo").exists()


@pytest.mark.slow  # processes that train (or wait to)
def test_a_rank_left_alone_fails_with_rendezvous_timeout(prepared_workspace, synth_112, tmp_path):
    """Node 0 of 2 (its index from JOB_COMPLETION_INDEX, as in an Indexed Job pod) and no node 1."""
    doc = short_run(prepared_workspace, synth_112 / "dataset", "dist-alone")
    doc["distributed"] = {"nodes": 2, "rendezvousTimeoutSeconds": 3}
    config, log, term = write_config(tmp_path / "cfg.json", doc), tmp_path / "train.log", tmp_path / "term.json"
    port = free_port()
    proc = launch(cli_command("train", "--config", str(config), "--termination-log", str(term)), log,
                  MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), JOB_COMPLETION_INDEX="0")
    assert finish(proc, log) == 5, log.read_text()[-3000:]
    summary = json.loads(term.read_text())
    assert summary["reason"] == "RendezvousTimeout", summary
    assert summary["message"].startswith("only the ranks that arrived (1 of 2) met within 3s")
    assert f"MASTER_ADDR=127.0.0.1 MASTER_PORT={port}" in summary["message"]
    assert not (RunConfig.model_validate(doc).run_dir / "checkpoints").exists()


# --- unit tests: config, placement, failures ----------------------------------------------------------------------

def test_distributed_config_defaults_and_bounds():
    spec = load_config().distributed
    assert (spec.nodes, spec.devices_per_node, spec.backend, spec.rendezvous_timeout_seconds) == (1, 1, "auto", 600)
    cfg = load_config(None, ["distributed.nodes=2", "distributed.devicesPerNode=8", "distributed.backend=nccl"])
    assert cfg.distributed.world_size == 16
    for override, message in (("distributed.nodes=0", "distributed.nodes: Input should be greater than or equal to 1"),
                              ("distributed.nodes=65", "distributed.nodes: Input should be less than or equal to 64"),
                              ("distributed.devicesPerNode=17", "distributed.devicesPerNode: Input should be less"),
                              ("distributed.backend=mpi", "distributed.backend: Input should be 'auto', 'nccl' or"),
                              ("distributed.rendezvousTimeoutSeconds=0", "distributed.rendezvousTimeoutSeconds: Input"),
                              ("distributed.gpus=2", "distributed.gpus: Extra inputs are not permitted")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            load_config(None, [override])


@pytest.mark.parametrize("env, missing", [
    ({}, "needs MASTER_ADDR and NODE_RANK (or JOB_COMPLETION_INDEX)"),
    ({"NODE_RANK": "1"}, "needs MASTER_ADDR in the environment"),
    ({"MASTER_ADDR": "run-train-0.run-train"}, "needs NODE_RANK (or JOB_COMPLETION_INDEX) in the environment"),
])
def test_more_than_one_node_needs_the_master_address_and_a_node_rank(env, missing):
    with pytest.raises(EnvironmentProblem, match=missing.replace("(", r"\(").replace(")", r"\)")) as info:
        placement(DistributedSpec(nodes=2), env)
    assert classify(info.value) == ("EnvironmentError", 5)


def test_placement_from_the_pod_environment():
    base = {"MASTER_ADDR": "v4-train-0.v4-train", "MASTER_PORT": "29400"}
    spec = DistributedSpec(nodes=2, devices_per_node=8)
    place = placement(spec, {**base, "JOB_COMPLETION_INDEX": "1", "LOCAL_RANK": "3", "WORLD_SIZE": "16"})
    assert (place.node_rank, place.local_rank, place.global_rank, place.world_size) == (1, 3, 11, 16)
    assert (place.master_addr, place.master_port, place.is_global_zero) == ("v4-train-0.v4-train", 29400, False)
    assert placement(spec, {**base, "NODE_RANK": "0", "JOB_COMPLETION_INDEX": "1"}).node_rank == 0  # NODE_RANK wins
    assert placement(spec, {"MASTER_ADDR": "a", "NODE_RANK": "1"}).master_port == 29500  # torchrun's default
    single = placement(DistributedSpec(), {})
    assert (single.world_size, single.distributed, single.master_port, single.master_addr) == (1, False, None,
                                                                                                "127.0.0.1")
    for env, message in (({**base, "NODE_RANK": "2"}, "NODE_RANK=2 is outside 0..1"),
                         ({**base, "NODE_RANK": "one"}, "NODE_RANK='one' is not an integer"),
                         ({**base, "NODE_RANK": "0", "LOCAL_RANK": "8"}, "LOCAL_RANK=8 is outside 0..7"),
                         ({**base, "NODE_RANK": "0", "WORLD_SIZE": "2"}, "WORLD_SIZE=2 but the config asks for 2 "
                                                                         "node\\(s\\) x 8 = 16 ranks"),
                         ({**base, "NODE_RANK": "0", "MASTER_PORT": "70000"}, "MASTER_PORT=70000 is outside")):
        with pytest.raises(EnvironmentProblem, match=message):
            placement(spec, env)


def test_backend_shards_and_launcher_children():
    assert resolve_backend("auto", cuda=True) == "nccl" and resolve_backend("auto", cuda=False) == "gloo"
    with pytest.raises(EnvironmentProblem, match="nccl needs GPUs"):
        resolve_backend("nccl", cuda=False)
    check_shards(2, 2)
    with pytest.raises(ConfigError, match="4 ranks but only 3 training samples"):
        check_shards(3, 4)
    assert is_launcher_child({"LOCAL_RANK": "1"}) and not is_launcher_child({"LOCAL_RANK": "0"})
    assert not is_launcher_child({})


def test_rendezvous_errors_name_who_arrived_and_where():
    import torch.distributed as dist

    place = Placement(nodes=2, devices_per_node=1, node_rank=1, master_addr="v4-train-0.v4-train", master_port=29400)
    server = rendezvous_failure(dist.DistStoreError("Timed out after 601 seconds waiting for clients. 1/2 clients "
                                                    "joined."), place, 600)
    assert isinstance(server, RendezvousTimeout) and classify(server) == ("RendezvousTimeout", 5)
    assert str(server).startswith("only the ranks that arrived (1 of 2) met within 600s; "
                                  "MASTER_ADDR=v4-train-0.v4-train MASTER_PORT=29400")
    client = rendezvous_failure(dist.DistNetworkError("The client socket has timed out after 600000ms while trying "
                                                      "to connect to (v4-train-0.v4-train, 29400)."), place, 600)
    assert classify(client) == ("RendezvousTimeout", 5) and "this is rank 1 of 2 (node 1 of 2" in str(client)
    other = rendezvous_failure(dist.DistNetworkError("The server socket has failed to listen (EADDRINUSE)"), place, 9)
    assert classify(other) == ("EnvironmentError", 5)
    assert rendezvous_failure(ValueError("bad"), place, 600) is None


def test_unused_parameters_and_world_size_one_settings():
    from quranft.trainer import ddp
    from quranft.contract.config import TrainingSpec

    assert ddp.trainer_settings(placement(DistributedSpec(), {}), None, 600, False, cuda=False) == {"devices": 1}
    assert ddp.unused_parameters(TrainingSpec(mode="ctcOnly", freeze={"rnntDecoder": False}))
    assert not ddp.unused_parameters(TrainingSpec(mode="ctcOnly"))
    assert ddp.unused_parameters(TrainingSpec(mode="hybrid", ctcWeight=0))
    assert not ddp.unused_parameters(TrainingSpec(mode="hybrid"))
    settings = ddp.trainer_settings(Placement(nodes=2, devices_per_node=2, master_port=1234), "gloo", 7, False,
                                    cuda=False)
    assert (settings["devices"], settings["num_nodes"], settings["sync_batchnorm"]) == (2, 2, False)
    strategy = settings["strategy"]
    assert strategy.cluster_environment.main_port == 1234 and type(strategy.cluster_environment).__name__ == (
        "PodEnvironment")
    assert strategy._ddp_kwargs == {"gradient_as_bucket_view": True, "find_unused_parameters": False}


def test_no_auto_detected_cluster_environment_takes_over(monkeypatch):
    """Lightning picks TorchElastic, SLURM, LSF or MPI from env vars a pod may carry (2.4 never detects Kubeflow,
    whose environment takes a pod for one rank); the explicit PodEnvironment wins over all of them."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from lightning.pytorch import Trainer

    from quranft.trainer import ddp
    from quranft.trainer.ddp import PodEnvironment

    env = {"TORCHELASTIC_RUN_ID": "x", "SLURM_NTASKS": "4", "SLURM_JOB_NAME": "train", "MASTER_ADDR": "v4-train-0.v4",
           "MASTER_PORT": "29400", "WORLD_SIZE": "4", "RANK": "2", "NODE_RANK": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert TorchElasticEnvironment.detect() and SLURMEnvironment.detect()
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # the Trainer sets it to this rank (2)
    place = placement(DistributedSpec(nodes=2, devices_per_node=2))
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      **ddp.trainer_settings(place, "gloo", 60, False, cuda=False))
    environment = trainer.strategy.cluster_environment
    assert isinstance(environment, PodEnvironment)
    assert (environment.node_rank(), environment.main_address, environment.main_port) == (1, "v4-train-0.v4", 29400)
    assert (trainer.num_nodes, trainer.num_devices) == (2, 2)


def test_progress_history_appends_one_line_per_report(tmp_path):
    lines: list[str] = []
    reporter = ProgressReporter(tmp_path / "progress.json", 0.001, out=lines.append,
                                history=tmp_path / "progress_history.jsonl")
    reporter.report(step=1, max_steps=2, loss=3.0, lr=0.1, epoch=0, worldSize=2, samplesPerSecond=8.0)
    reporter.report(step=2, max_steps=2, loss=2.0, lr=0.1, epoch=0, worldSize=2, samplesPerSecond=9.0, valWer=0.5,
                    force=True)
    rows = [json.loads(line) for line in (tmp_path / "progress_history.jsonl").read_text().splitlines()]
    assert [tuple(r) for r in rows] == [HISTORY_KEYS] * 2
    assert [(r["step"], r["loss"], r["valWer"], r["samplesPerSecond"]) for r in rows] == [(1, 3.0, None, 8.0),
                                                                                        (2, 2.0, 0.5, 9.0)]
    assert json.loads(lines[-1][len(PROGRESS_PREFIX):])["worldSize"] == 2


def test_missing_rendezvous_env_fails_the_cli_before_loading_a_model(tmp_path, monkeypatch):
    from quranft.trainer import cli

    for name in ("MASTER_ADDR", "NODE_RANK", "JOB_COMPLETION_INDEX", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    config = write_config(tmp_path / "cfg.json", {"training": {"baseModel": "tiny"}, "distributed": {"nodes": 3},
                                                  "run": {"workspace": str(tmp_path)}})
    term = tmp_path / "term.json"
    assert cli.main(["train", "--config", str(config), "--termination-log", str(term)]) == 5
    assert not (tmp_path / "runs").exists()  # stopped before the run directory, let alone a model
    summary = json.loads(term.read_text())
    assert summary["reason"] == "EnvironmentError"
    assert "distributed.nodes=3 needs MASTER_ADDR and NODE_RANK (or JOB_COMPLETION_INDEX)" in summary["message"]


def test_a_launcher_child_leaves_the_termination_message_to_its_pod(tmp_path, monkeypatch):
    from quranft.trainer import cli

    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(cli, "LAUNCHER_EXIT_WAIT_SECONDS", 0.2)
    term = tmp_path / "term.json"
    assert cli.main(["train", "--config", str(tmp_path / "missing.json"), "--termination-log", str(term)]) == 2
    assert not term.exists()
