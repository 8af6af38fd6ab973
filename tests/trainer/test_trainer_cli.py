"""`quranft trainer` CLI: exit codes and the termination-message summary (docs/contracts.md)."""
from __future__ import annotations

import json
import subprocess

import pytest

from fixtures_model import REPO, cli_command, cli_env, prepared_workspace, run_config, synth_112, write_config  # noqa: F401
from quranft.trainer.cli import main


def summary(path):
    line = path.read_text()
    assert "\n" not in line.strip() and len(line.encode()) <= 4096
    return json.loads(line)


def test_bad_config_value_exits_2_with_the_field_path(tmp_path):
    term = tmp_path / "term.json"
    code = main(["train", "--set", "training.maxSteps=0", "--termination-log", str(term)])
    assert code == 2
    doc = summary(term)
    assert doc == {"ok": False, "stage": "train", "reason": "ConfigError", "message": doc["message"]}
    assert "training.maxSteps" in doc["message"]


def test_unknown_flag_exits_2_and_still_writes_the_summary(tmp_path):
    term = tmp_path / "term.json"
    assert main(["train", "--bogus", "--termination-log", str(term)]) == 2
    assert summary(term)["reason"] == "ConfigError"
    assert main(["frobnicate", "--termination-log", str(term)]) == 2


def test_missing_config_file_exits_2(tmp_path):
    term = tmp_path / "term.json"
    assert main(["prepare", "--config", str(tmp_path / "nope.json"), "--termination-log", str(term)]) == 2
    assert "cannot read config" in summary(term)["message"]


def test_train_without_prepared_data_exits_3(tmp_path):
    term = tmp_path / "term.json"
    code = main(["train", "--set", f"run.workspace={tmp_path}", "--set", "training.baseModel=tiny",
                 "--termination-log", str(term)])
    assert code == 3
    doc = summary(term)
    assert doc["reason"] == "DataError" and "quranft trainer prepare" in doc["message"]


def test_freezing_more_layers_than_the_model_has_exits_2(prepared_workspace, synth_112, tmp_path):
    doc = run_config(prepared_workspace, synth_112 / "dataset", "overfrozen", freeze={"encoderLayers": 9})
    term = tmp_path / "term.json"
    code = main(["train", "--config", str(write_config(tmp_path / "cfg.json", doc)), "--termination-log", str(term)])
    assert code == 2
    assert "exceeds the 4 encoder layers" in summary(term)["message"]


def test_prepare_subcommand_reuses_the_prepared_data(prepared_workspace, synth_112, tmp_path, capsys):
    doc = run_config(prepared_workspace, synth_112 / "dataset", "any")
    term = tmp_path / "term.json"
    assert main(["prepare", "--config", str(write_config(tmp_path / "cfg.json", doc)),
                 "--termination-log", str(term)]) == 0
    doc = summary(term)
    assert doc["ok"] and doc["stage"] == "prepare" and doc["reused"] is True
    assert doc["stats"]["train"]["samples"] == 8


def test_doctor_reports_torch_and_libnvvm(tmp_path, capsys):
    term = tmp_path / "term.json"
    assert main(["doctor", "--json", "--termination-log", str(term)]) == 0
    out = capsys.readouterr().out
    report, _ = json.JSONDecoder().raw_decode(out.lstrip())  # the report, then the summary line
    assert {"torch", "cudaAvailable", "libnvvm", "numba", "hybridOk"} <= set(report)
    assert summary(term)["stage"] == "doctor"


def test_hybrid_on_gpu_without_libnvvm_is_an_environment_error(monkeypatch):
    from quranft.trainer import doctor
    from quranft.trainer.errors import EnvironmentProblem, classify

    monkeypatch.setattr(doctor, "libnvvm_status", lambda: (False, "libnvvm.so: cannot open shared object file"))
    with pytest.raises(EnvironmentProblem, match="libnvvm") as info:
        doctor.check_mode("hybrid", cuda=True)
    assert classify(info.value) == ("EnvironmentError", 5)
    doctor.check_mode("ctcOnly", cuda=True)  # ctcOnly never needs it
    doctor.check_mode("hybrid", cuda=False)  # numba's CPU RNNT loss needs no NVVM


def test_tiny_model_and_synth_data_through_the_dispatcher(tmp_path):
    """The real entry point (`python -m quranft.cli trainer ...`) in a subprocess."""
    out = tmp_path / "base.nemo"
    proc = subprocess.run(cli_command("tiny-model", "--out", str(out)), cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 100_000
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["ok"] and last["stage"] == "tiny-model" and last["parameters"] > 100_000
    bad = subprocess.run(cli_command("synth-data", "--out", str(tmp_path / "s"), "--surahs", "0"), cwd=REPO,
                         env=cli_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--surahs" in bad.stderr
