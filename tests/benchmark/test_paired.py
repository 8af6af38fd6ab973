"""Paired statistics and the paired verdict (issue 11, "A verdict you can trust")."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from quranft.benchmark.paired import (
    PairingError,
    breakdown,
    compare,
    pair_runs,
    required_clips,
    sequence_test,
)
from quranft.benchmark.verdict import (
    MAX_MESSAGE_BYTES,
    Targets,
    Tolerances,
    decide,
    dumps,
    judge,
    metrics_from_run,
)


def make_run(name, recall, seq=None, precision=None, latency=None, ids=None, head=None, role=None, **row_extra):
    """A results-file run from per-clip scores (aggregates are the per-clip means, as the runner writes them)."""
    recall = [float(x) for x in recall]
    seq = [float(x == 1.0) for x in recall] if seq is None else [float(x) for x in seq]
    precision = recall if precision is None else [float(x) for x in precision]
    n = len(recall)
    ids = [f"clip{i:04d}" for i in range(n)] if ids is None else list(ids)
    latency = [0.3] * n if latency is None else list(latency)
    rows = []
    for i in range(n):
        row = {"id": ids[i], "expected": [], "predicted": [], "recall": recall[i], "precision": precision[i],
               "sequence_accuracy": seq[i], "latency": latency[i], "transcript": ""}
        for key, values in row_extra.items():
            if values[i] is not None:
                row[key] = values[i]
        rows.append(row)
    timed = [x for x in latency if x is not None]
    run = {"name": name, "recall": float(np.mean(recall)), "precision": float(np.mean(precision)),
           "sequence_accuracy": float(np.mean(seq)), "total": n, "scored": n,
           "avg_latency": float(np.mean(timed)) if timed else None, "model_size": 115_000_000, "per_sample": rows}
    if head:
        run["head"] = head
    if role:
        run["role"] = role
    return run


def v1_case():
    """53 clips; the baseline gets 45 right (84.9 %), the model the same minus two (81.1 %)."""
    base = [1.0] * 45 + [0.0] * 8
    cand = [0.0, 0.0] + base[2:]
    return make_run("v1", cand), make_run("base", base)


def test_v1_two_clip_regression_is_inconclusive():
    cand, base = v1_case()
    j = judge({"ctc": (cand, base)}, verdict_head="ctc")
    assert (j.verdict, j.reason, j.rule) == ("neutral", "Inconclusive", "paired")
    c = j.head.comparison
    seq = c.metrics["sequenceAccuracy"]
    assert seq.delta == pytest.approx(-2 / 53)
    assert seq.low < -0.01 < seq.high  # the interval straddles the tolerance
    assert (c.sequence_test.candidate_only, c.sequence_test.baseline_only) == (0, 2)
    assert c.sequence_test.p_value == stats.binomtest(0, 2, 0.5).pvalue == 0.5
    assert j.required_clips is not None and j.required_clips > 53
    # today's threshold rule calls the same two clips a regression
    t = judge({"ctc": (cand, base)}, verdict_head="ctc", rule="threshold")
    assert (t.verdict, t.reason) == ("regression", "Regression")


def test_required_clips_resolve_the_same_difference():
    """Repeating the V1 pattern up to `requiredClips` clips turns Inconclusive into a verdict."""
    cand, base = v1_case()
    need = judge({"ctc": (cand, base)}, verdict_head="ctc").required_clips
    k = math.ceil(need / 53)
    big_c = make_run("v1", [r["recall"] for r in cand["per_sample"]] * k)
    big_b = make_run("base", [r["recall"] for r in base["per_sample"]] * k)
    j = judge({"ctc": (big_c, big_b)}, verdict_head="ctc")
    assert (j.verdict, j.reason) == ("regression", "Regression")
    assert j.head.comparison.metrics["recall"].high < -0.01


def test_2000_clips_with_a_3_point_gain_is_an_improvement():
    rng = np.random.default_rng(7)
    base = (rng.random(2000) < 0.8).astype(float)
    cand = base.copy()
    wrong, right = np.flatnonzero(base == 0), np.flatnonzero(base == 1)
    cand[rng.choice(wrong, 100, replace=False)] = 1.0  # fixes 100 clips ...
    cand[rng.choice(right, 40, replace=False)] = 0.0  # ... and breaks 40: +3 points
    j = judge({"ctc": (make_run("c", cand), make_run("b", base))}, verdict_head="ctc")
    assert (j.verdict, j.reason) == ("improvement", "Improvement")
    for key in ("recall", "sequenceAccuracy"):
        m = j.head.comparison.metrics[key]
        assert m.delta == pytest.approx(0.03) and m.low > 0.01 and m.high > m.delta > m.low
    t = j.head.comparison.sequence_test
    assert (t.candidate_only, t.baseline_only) == (100, 40)
    assert t.p_value == stats.binomtest(100, 140, 0.5).pvalue and t.p_value < 1e-5
    assert j.required_clips is not None and j.required_clips < 2000


def test_clear_sequence_accuracy_drop_is_a_regression_even_with_recall_unchanged():
    n = 200
    base = make_run("b", [1.0] * n)
    # every verse still found, but 40 clips gain an extra verse: recall equal, precision and seqacc drop
    seq = [0.0] * 40 + [1.0] * (n - 40)
    cand = make_run("c", [1.0] * n, seq=seq, precision=[0.5] * 40 + [1.0] * (n - 40))
    j = judge({"ctc": (cand, base)}, verdict_head="ctc")
    assert (j.verdict, j.reason) == ("regression", "Regression")
    c = j.head.comparison
    assert c.interval("recall") == (0.0, 0.0)
    assert c.metrics["sequenceAccuracy"].high < -0.01
    # the same drop on precision alone is not guarded
    only_precision = make_run("c", [1.0] * n, precision=[0.5] * 40 + [1.0] * (n - 40))
    assert judge({"ctc": (only_precision, base)}, verdict_head="ctc").verdict == "neutral"


def test_primary_metric_is_configurable():
    n = 300
    base = make_run("b", [1.0] * n, seq=[0.0] * 100 + [1.0] * 200)
    cand = make_run("c", [1.0] * n, seq=[1.0] * n)  # recall equal, sequence accuracy +33 points
    assert judge({"ctc": (cand, base)}, verdict_head="ctc").reason == "Inconclusive"
    j = judge({"ctc": (cand, base)}, verdict_head="ctc", primary="sequenceAccuracy")
    assert (j.verdict, j.primary) == ("improvement", "sequenceAccuracy")
    with pytest.raises(ValueError):
        judge({"ctc": (cand, base)}, verdict_head="ctc", primary="wer")


def test_latency_is_paired_on_clips_timed_in_both_runs():
    n = 100
    timed_b = [0.30 if i % 2 == 0 else None for i in range(n)]
    timed_c = [0.60 if i % 4 == 0 else None for i in range(n)]  # timed on a quarter of the clips
    base, cand = make_run("b", [1.0] * n, latency=timed_b), make_run("c", [1.0] * n, latency=timed_c)
    j = judge({"ctc": (cand, base)}, verdict_head="ctc")
    lat = j.head.comparison.metrics["avgLatency"]
    assert lat.clips == 25 and lat.delta == pytest.approx(0.30) and lat.low == pytest.approx(0.30)
    assert (j.verdict, j.reason) == ("regression", "Regression")
    # within the allowance max(10 % of 0.30, 0.05 s)
    cand_ok = make_run("c", [1.0] * n, latency=[0.34 if x else None for x in timed_c])
    assert judge({"ctc": (cand_ok, base)}, verdict_head="ctc").reason == "Inconclusive"
    # no clip timed in both: no latency interval, the aggregates guard latency as before
    disjoint = make_run("c", [1.0] * n, latency=[0.9 if i % 2 else None for i in range(n)])
    j = judge({"ctc": (disjoint, base)}, verdict_head="ctc")
    assert "avgLatency" not in j.head.comparison.metrics and j.verdict == "regression"


@pytest.mark.parametrize("seed", range(8))
def test_sequence_test_p_value_is_scipys_binomtest(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    a, b = rng.random(n) < rng.random(), rng.random(n) < rng.random()
    t = sequence_test(a.astype(float), b.astype(float))
    only_a, only_b = int(np.count_nonzero(a & ~b)), int(np.count_nonzero(~a & b))
    assert (t.candidate_only, t.baseline_only) == (only_a, only_b)
    expected = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert t.p_value == expected


def test_sequence_test_without_discordant_clips():
    assert sequence_test([1, 0, 1], [1, 0, 1]).p_value == 1.0


def noisy_pair(n=300, seed=3):
    rng = np.random.default_rng(seed)
    base = rng.choice([0.0, 0.5, 1.0], size=n, p=[0.2, 0.2, 0.6])
    cand = np.clip(base + rng.choice([-0.5, 0.0, 0.5], size=n, p=[0.15, 0.6, 0.25]), 0, 1)
    lat_b = rng.uniform(0.2, 0.4, n)
    return (make_run("c", cand, latency=lat_b + rng.normal(0.01, 0.02, n)),
            make_run("b", base, latency=lat_b))


def test_defaults_agree():
    from quranft.benchmark import paired, verdict

    assert (verdict.DEFAULT_RESAMPLES, verdict.DEFAULT_SEED) == (paired.DEFAULT_RESAMPLES, paired.DEFAULT_SEED)
    assert verdict.PRIMARY_METRICS == tuple(paired.SCORE_FIELDS)


def test_seeded_bootstrap_is_reproducible():
    cand, base = noisy_pair()
    paired = pair_runs(cand, base)
    first, again, other = compare(paired, seed=0), compare(paired, seed=0), compare(paired, seed=1)
    assert first == again
    assert first.interval("recall") != other.interval("recall")
    assert first.metrics["recall"].delta == other.metrics["recall"].delta
    assert first.resamples == 2000 and first.seed == 0


def test_bootstrap_is_a_percentile_interval_of_one_shared_resampling():
    cand, base = noisy_pair(n=120)
    paired = pair_runs(cand, base)
    got = compare(paired, resamples=3000, seed=5)
    index = np.random.default_rng(5).integers(0, 120, size=(3000, 120))
    for key in ("recall", "precision", "sequenceAccuracy", "avgLatency"):
        diff = paired.candidate[key] - paired.baseline[key]
        lo, hi = np.percentile(diff[index].mean(axis=1), [2.5, 97.5])
        assert got.interval(key) == pytest.approx((lo, hi))


def test_bootstrap_agrees_with_scipy_bootstrap():
    cand, base = noisy_pair(n=400, seed=11)
    paired = pair_runs(cand, base)
    ours = compare(paired, resamples=4000).metrics["recall"]
    diff = paired.candidate["recall"] - paired.baseline["recall"]
    ref = stats.bootstrap((diff,), np.mean, n_resamples=4000, method="percentile",
                          rng=np.random.default_rng(123)).confidence_interval
    assert ours.low == pytest.approx(ref.low, abs=0.005) and ours.high == pytest.approx(ref.high, abs=0.005)
    assert ours.sd == pytest.approx(np.std(diff, ddof=1))


def test_pairing_ignores_order():
    cand, base = noisy_pair(n=80)
    shuffled = dict(cand, per_sample=list(np.random.default_rng(0).permutation(cand["per_sample"])))
    assert compare(pair_runs(shuffled, base)) == compare(pair_runs(cand, base))


def test_pairing_uses_shared_ids_only():
    cand = make_run("c", [1, 1, 0, 1], ids=["a", "b", "c", "d"])
    base = make_run("b", [0, 0, 1, 1, 1], ids=["b", "c", "d", "e", "f"])
    paired = pair_runs(cand, base)
    assert paired.ids == ("b", "c", "d")
    c = compare(paired)
    assert (c.clips, c.candidate_samples, c.baseline_samples) == (3, 4, 5)
    assert c.metrics["recall"].delta == pytest.approx(((1 - 0) + (0 - 0) + (1 - 1)) / 3)


def test_pairing_refuses_runs_without_shared_ids():
    cand = make_run("c", [1, 1, 0], ids=["a", "b", "c"])
    base = make_run("b", [1] * 5, ids=list("vwxyz"))
    with pytest.raises(PairingError, match=r"results \(3 samples\) and old.json \(5 samples\) share no sample id"):
        pair_runs(cand, base, names=("results", "old.json"))
    with pytest.raises(PairingError):
        judge({"ctc": (cand, base)}, verdict_head="ctc")
    # the threshold rule needs only aggregates: it still judges
    j = judge({"ctc": (cand, base)}, verdict_head="ctc", rule="threshold")
    assert j.head.comparison is None and j.verdict == decide(metrics_from_run(cand), metrics_from_run(base))
    dup = make_run("c", [1, 1], ids=["a", "a"])
    with pytest.raises(PairingError, match="twice"):
        pair_runs(dup, base)


@pytest.mark.parametrize("seed", range(12))
def test_threshold_rule_reproduces_decide(seed):
    rng = np.random.default_rng(seed)
    n = 50
    base = rng.choice([0.0, 0.5, 1.0], size=n)
    cand = np.clip(base + rng.choice([-0.5, 0.0, 0.5], size=n, p=rng.dirichlet([1, 3, 1])), 0, 1)
    lat = rng.uniform(0.2, 0.5)
    c, b = make_run("c", cand, latency=[lat] * n), make_run("b", base, latency=[0.33] * n)
    tol = Tolerances(drop=float(rng.uniform(0, 0.03)), min_gain=float(rng.uniform(0, 0.03)))
    j = judge({"ctc": (c, b)}, verdict_head="ctc", rule="threshold", tolerances=tol)
    expected = decide(metrics_from_run(c), metrics_from_run(b), tol)
    assert j.verdict == expected
    reasons = {"improvement": "Improvement", "regression": "Regression", "neutral": "WithinTolerance"}
    assert j.reason == reasons[expected]


def test_required_clips_formula():
    z = 1.959963984540054 + 0.8416212335729143
    assert required_clips(0.03, 0.2, 0.01) == math.ceil((z * 0.2 / 0.02) ** 2) == 785
    assert required_clips(-0.03, 0.2, 0.01) == 785
    assert required_clips(0.0, 0.2, 0.01) is None
    assert required_clips(0.01, 0.2, 0.01) is None  # a difference the size of the margin never resolves
    assert required_clips(0.005, 0.2, 0.01) is None


def test_no_baseline_is_neutral():
    cand, _ = v1_case()
    j = judge({"ctc": (cand, None)}, verdict_head="ctc")
    assert (j.verdict, j.reason, j.required_clips) == ("neutral", "NoBaseline", None)
    msg = j.message(Targets(), "/r.json")
    assert msg["baseline"] is None and msg["intervals"] == {} and msg["sequenceTest"] is None
    assert msg["heads"]["ctc"]["baseline"] is None and msg["pairedClips"] is None


def test_verdict_head_decides():
    cand, base = v1_case()
    n = 2000
    good_c, good_b = make_run("c", [1.0] * n), make_run("b", [1.0] * 1000 + [0.0] * 1000)
    heads = {"ctc": (cand, base), "rnnt": (good_c, good_b)}
    assert judge(heads, verdict_head="ctc").verdict == "neutral"
    assert judge(heads, verdict_head="rnnt").verdict == "improvement"
    with pytest.raises(ValueError):
        judge(heads, verdict_head="tdt")


def two_head_judgement():
    cand, base = noisy_pair(n=60)
    cand2, base2 = noisy_pair(n=60, seed=9)
    return judge({"ctc": (cand, base), "rnnt": (cand2, base2)}, verdict_head="rnnt")


def test_message_shape():
    j = two_head_judgement()
    msg = j.message(Targets(), "/w/results/2026-02-27_092540.json", {"corpus": {"hash": "abc", "clips": 60}})
    back = json.loads(dumps(msg))
    assert list(back)[:7] == ["ok", "stage", "verdict", "reason", "rule", "verdictHead", "primaryMetric"]
    assert back["verdictHead"] == "rnnt" and back["rule"] == "paired" and "truncated" not in back
    assert set(back["intervals"]) == {"recall", "precision", "sequenceAccuracy", "avgLatency"}
    assert set(back["display"]) == {"recall", "precision", "sequenceAccuracy"}
    assert set(back["heads"]) == {"ctc", "rnnt"}
    assert set(back["heads"]["ctc"]) == {"metrics", "baseline", "intervals", "display"}
    assert set(back["heads"]["ctc"]["metrics"]) == {"recall", "precision", "sequenceAccuracy", "avgLatency"}
    assert back["corpus"] == {"hash": "abc", "clips": 60} and list(back)[-1] == "resultsPath"
    m = j.head.comparison.metrics["recall"]
    assert back["intervals"]["recall"] == [round(m.low, 4), round(m.high, 4)]
    sign = "+" if round(m.delta * 100, 1) >= 0 else "-"
    assert back["display"]["recall"] == f"{sign}{abs(m.delta) * 100:.1f} ±{(m.high - m.low) * 50:.1f}"
    assert back["pairedClips"] == 60
    assert set(back["sequenceTest"]) == {"candidateOnly", "baselineOnly", "pValue"}
    assert back["metrics"]["recall"] == round(j.head.metrics["recall"], 4)
    with pytest.raises(ValueError):
        j.message(Targets(), "/r", {"verdict": "improvement"})


def test_two_head_message_fits_4kb_with_long_paths():
    j = two_head_judgement()
    long = "/workspace/" + "very-long-directory-name/" * 200
    extra = {"corpus": {"hash": "f" * 64, "clips": 60, "total": 61, "spec": {"dataset": "x" * 300}},
             "leakage": {"exactAudio": [f"clip{i:04d}" for i in range(40)], "excluded": 40},
             "artifact": {"bytes": 115_000_000, "sha256": "e" * 64},
             "reportPath": long + "report.md"}
    msg = j.message(Targets(), long + "results.json", extra)
    line = dumps(msg)
    assert len(line.encode()) <= MAX_MESSAGE_BYTES
    back = json.loads(line)
    for key in ("verdict", "reason", "metrics", "baseline", "intervals", "targets", "resultsPath"):
        assert key in back
    assert back["intervals"] == j.message(Targets(), "/r.json")["intervals"]
    assert back["truncated"][0] == "heads"  # heads went first, then the extras, last given first
    assert back["truncated"][1:3] == ["reportPath", "artifact"]
    assert back["resultsPath"].endswith("results.json")
    # a little too long: only the heads' display strings go
    size = len(dumps(j.message(Targets(), "/r.json", extra={"corpus": {"hash": "f" * 64}})).encode())
    path = "/" + "d" * (MAX_MESSAGE_BYTES - size + 20)
    msg = j.message(Targets(), path, extra={"corpus": {"hash": "f" * 64}})
    assert msg["truncated"] == ["heads.display"] and msg["resultsPath"] == path
    assert all("display" not in h and "baseline" in h for h in msg["heads"].values())
    assert len(dumps(msg).encode()) <= MAX_MESSAGE_BYTES
    # short paths: nothing dropped
    small = j.message(Targets(), "/w/r.json", {"corpus": {"hash": "f" * 64, "clips": 60}})
    assert "truncated" not in small and len(dumps(small).encode()) < MAX_MESSAGE_BYTES


def test_for_results_is_full_precision_json():
    j = two_head_judgement()
    out = json.loads(json.dumps(j.for_results(Targets())))
    assert out["verdict"] == j.verdict and out["rule"] == "paired" and set(out["heads"]) == {"ctc", "rnnt"}
    cmp = out["heads"]["rnnt"]["comparison"]
    assert cmp["metrics"]["recall"]["low"] == j.head.comparison.metrics["recall"].low
    assert cmp["resamples"] == 2000 and cmp["pairedClips"] == 60
    assert out["tolerances"]["drop"] == 0.01 and "targets" in out


def test_breakdown_by_category_and_source():
    cats = ["short", "long", None, "short"]
    srcs = ["user", "reference", "user", None]
    cand = make_run("c", [1, 0, 1, 0.5], ids="abcd", category=cats, source=srcs)
    base = make_run("b", [1, 1, 0, 0.5], ids="abcd")
    rows = {(g.dimension, g.label): g for g in breakdown(cand, base)}
    assert set(rows) == {("category", "short"), ("category", "long"), ("category", "unknown"),
                         ("source", "user"), ("source", "reference"), ("source", "unknown")}
    short = rows[("category", "short")]
    assert short.clips == 2 and short.candidate["recall"] == 0.75 and short.baseline["recall"] == 0.75
    assert rows[("source", "user")].candidate["recall"] == 1.0 and rows[("source", "user")].baseline["recall"] == 0.5
    # unlabelled rows everywhere: that dimension is left out
    assert all(g.dimension == "category" for g in breakdown(make_run("c", [1, 0], category=["short", None])))
