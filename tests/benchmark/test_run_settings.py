"""`quranft benchmark run --config FILE [--set a.b=c] [flags]`: the run config's `benchmark` section, the flags on
top (run_settings.py), and the contract's exit code 2 for a bad file."""

import json

import pytest
from corpus_helpers import entry, make_corpus

from quranft.benchmark import run_settings
from quranft.benchmark.cli import build_parser, main
from quranft.contract.config import ConfigError


def settings(*argv):
    return run_settings.from_args(build_parser().parse_args(["run", *argv]))


def write_config(tmp_path, benchmark, **sections):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"run": {"name": "v3", "workspace": str(tmp_path)}, "benchmark": benchmark,
                                **sections}))
    return str(path)


def test_flags_alone_keep_the_defaults_they_always_had():
    s = settings("--model", "m.nemo", "--corpus", "c", "--out", "o")
    assert (s.model, s.corpus, s.out, s.workspace) == ("m.nemo", "c", "o", ".")
    assert s.baseline is None and s.baseline_model is None  # no baseline unless asked for
    assert (s.batch_size, s.latency_samples, s.seed, s.resamples, s.device) == (1, 32, 0, 2000, "auto")
    assert (s.tolerance, s.min_gain, s.latency_tolerance, s.latency_tolerance_abs) == (1.0, 1.0, 0.1, 0.05)
    assert (s.target_recall, s.target_size_mb, s.target_latency) == (0.95, 200, 1.0)
    assert (s.decoder, s.verdict_rule, s.primary_metric) == ("auto", "paired", "recall")
    assert not s.include_leaked and not s.no_also_accept and s.verdict_head is None and s.mode is None


def test_config_file_sets_everything_and_an_explicit_flag_wins(tmp_path):
    config = write_config(tmp_path, {"model": "/m.nemo", "out": "/o", "seed": 3, "decoder": "both",
                                     "tolerances": {"tolerance": 2.0}, "baseline": {"baseModel": True},
                                     "corpus": {"dataset": "org/clips", "versesColumn": "v"}},
                          training={"baseModel": "tiny"})
    s = settings("--config", config)
    assert (s.model, s.out, s.seed, s.decoder, s.tolerance) == ("/m.nemo", "/o", 3, "both", 2.0)
    assert s.baseline_model == "tiny" and s.workspace == str(tmp_path)  # baseModel: the config's training.baseModel
    assert s.corpus is None and s.corpus_spec == {"dataset": "org/clips", "versesColumn": "v"}
    s = settings("--config", config, "--seed", "9", "--corpus", "/clips", "--baseline", "/b.json",
                 "--set", "benchmark.tolerances.minGain=4", "--set", "benchmark.seed=5")
    assert (s.seed, s.corpus, s.corpus_spec, s.min_gain) == (9, "/clips", None, 4)  # the flag beats --set too
    assert (s.baseline, s.baseline_model) == ("/b.json", None)


def test_qft_ref_baseline_reads_that_runs_latest_results(tmp_path):
    s = settings("--config", write_config(tmp_path, {"model": "m", "out": "o", "baseline": {"qftRef": {"name": "v2"}}}))
    assert s.baseline == str(tmp_path / "runs" / "v2" / "benchmark" / "latest.json")


@pytest.mark.parametrize("benchmark,message", [
    ({"model": "m", "out": "o", "resamples": 10}, "benchmark.resamples"),
    ({"model": "m", "out": "o", "unknownKey": 1}, "benchmark.unknownKey"),
    ({"model": "m", "out": "o", "baseline": {"baseModel": True, "resultsPath": "x"}}, "exactly one"),
    ({"model": "m", "out": "o", "decoder": "ctc", "verdictHead": "rnnt"}, "verdictHead"),
    ({"out": "o"}, "benchmark.model"),
])
def test_bad_config_is_a_config_error_naming_the_field(tmp_path, benchmark, message):
    with pytest.raises(ConfigError, match=message):
        settings("--config", write_config(tmp_path, benchmark))


@pytest.mark.parametrize("content", ["not json", "[1]"])
def test_unreadable_config_exits_2_with_a_termination_message(tmp_path, content):
    (tmp_path / "config.json").write_text(content)
    term = tmp_path / "term"
    assert main(["run", "--config", str(tmp_path / "config.json"), "--termination-log", str(term)]) == 2
    msg = json.loads(term.read_text())
    assert msg["reason"] == "ConfigError" and "config" in msg["message"]
    assert main(["run", "--config", str(tmp_path / "nope.json"), "--termination-log", str(term)]) == 2


def test_run_with_config_reaches_the_corpus(tmp_path):
    """The file alone drives a run: here its corpus has no audio present, a DataError (exit 3), not a flag error."""
    root = make_corpus(tmp_path / "c", [entry("a", "a.wav", [(1, 1)])])
    config = write_config(tmp_path, {"model": "m.nemo", "out": str(tmp_path / "o"), "corpusPath": str(root),
                                     "baseline": None})
    assert main(["run", "--config", config, "--termination-log", str(tmp_path / "t")]) == 3
    assert json.loads((tmp_path / "t").read_text())["reason"] == "DataError"
