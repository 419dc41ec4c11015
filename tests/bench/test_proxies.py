"""The proxy benchmark: the NB201 ground-truth reader, the benchmark (with a stand-in scorer
and synthetic images), its score cache, and ``winnow bench proxies`` end to end on real data."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats

from winnow.bench import proxies as bench
from winnow.bench import proxy_stats
from winnow.bench.proxies import BenchConfig, run_proxy_bench
from winnow.bench.proxy_stats import fold_indices, rank_correlations, split_indices
from winnow.proxies.ensemble import AZNAS_PROXIES, CalibratedEnsemble, FitSettings
from winnow.proxies.nb201_truth import GroundTruthError, read_nb201_truth, sample_cells
from winnow.search_space.archs.nb201 import OPS, format_arch
from winnow.service.cli import main

GOOD = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"


def write_truth(path, n: int = 12, seed: int = 0) -> list[tuple[str, float]]:
    """A small ground-truth CSV of ``n`` distinct random cells; returns (arch, accuracy) rows."""
    rng = np.random.default_rng(seed)
    archs: list[str] = []
    while len(archs) < n:
        arch = format_arch([OPS[i] for i in rng.integers(0, len(OPS), 6)])
        if arch not in archs:
            archs.append(arch)
    rows = [(arch, round(float(rng.uniform(10, 94)), 2)) for arch in archs]
    lines = ["index,arch,test_accuracy"] + [f"{i},{a},{acc}" for i, (a, acc) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return rows


# --- the ground-truth reader ----------------------------------------------------------------


def test_reads_cells_in_file_order_with_canonical_arch_strings(tmp_path):
    rows = write_truth(tmp_path / "t.csv", n=5)
    cells = read_nb201_truth(tmp_path / "t.csv")
    assert [(c.arch, c.test_accuracy, c.index) for c in cells] == [
        (a, acc, i) for i, (a, acc) in enumerate(rows)
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("index,arch\n0,x\n", r"lacks column\(s\) test_accuracy"),
        ("", "lacks column"),
        ("arch,test_accuracy\n", "no rows"),
        (f"arch,test_accuracy\n{GOOD},93.1\n|bogus~0|+,50\n", r"line 3: bad arch"),
        (f"arch,test_accuracy\n{GOOD},high\n", "test_accuracy 'high' is not a number"),
        (f"arch,test_accuracy\n{GOOD},140\n", r"not a percentage in \[0, 100\]"),
        (f"arch,test_accuracy\n{GOOD},nan\n", "not a percentage"),
        (f"index,arch,test_accuracy\nfirst,{GOOD},90\n", "index 'first' is not an integer"),
        (f"arch,test_accuracy\n{GOOD},90\n{GOOD},91\n", "appears more than once"),
    ],
)
def test_malformed_ground_truth_fails_with_the_line_and_field(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(GroundTruthError, match=message):
        read_nb201_truth(path)


def test_missing_ground_truth_file_names_the_file_and_format(tmp_path):
    with pytest.raises(GroundTruthError, match=r"no NAS-Bench-201 ground-truth file .*nope\.csv"):
        read_nb201_truth(tmp_path / "nope.csv")


def test_sampling_is_seeded_distinct_and_nested(tmp_path):
    write_truth(tmp_path / "t.csv", n=30)
    cells = read_nb201_truth(tmp_path / "t.csv")
    ten = sample_cells(cells, 10, seed=3)
    assert ten == sample_cells(cells, 10, seed=3) != sample_cells(cells, 10, seed=4)
    assert len({c.arch for c in ten}) == 10
    assert sample_cells(cells, 20, seed=3)[:10] == ten  # a small sample is a prefix of a larger
    with pytest.raises(GroundTruthError, match="between 1 and 30"):
        sample_cells(cells, 31)


# --- statistics -----------------------------------------------------------------------------


def test_rank_correlations_rank_missing_values_lowest():
    truth = [1.0, 2.0, 3.0, 4.0]
    assert rank_correlations([None, 1.0, float("nan"), 5.0], truth) == {
        "spearman": round(stats.spearmanr([0, 1, 0, 2], truth).statistic, 4),
        "kendall": round(stats.kendalltau([0, 1, 0, 2], truth).statistic, 4),
    }
    assert rank_correlations([10.0, 20.0, 30.0, 40.0], truth) == {"spearman": 1.0, "kendall": 1.0}
    assert rank_correlations([1.0, 1.0, 1.0, 1.0], truth) == {"spearman": None, "kendall": None}


def test_split_indices_partition_the_sample():
    calibration, evaluation = split_indices(50, 0.4, seed=7)
    assert len(calibration) == 20 and len(evaluation) == 30
    assert set(calibration).isdisjoint(evaluation)
    assert sorted([*calibration, *evaluation]) == list(range(50))
    np.testing.assert_array_equal(split_indices(50, 0.4, seed=7)[0], calibration)


# --- the benchmark with a stand-in scorer ---------------------------------------------------


@dataclass(frozen=True)
class Score:
    """Stands in for winnow.proxies.ProxyScore."""

    value: float | None
    seconds: float
    error: str | None = None


class StandInScorer:
    """score_model's signature, no passes: ``params`` (parameter count), ``conv_ops`` (the
    number of conv edges, read from the model) and ``broken`` (always fails). Counts calls."""

    def __init__(self, interrupt_after: int | None = None):
        self.calls: list[bool] = []  # the ``share`` flag of each call
        self.interrupt_after = interrupt_after

    def __call__(self, model, batches, proxies, *, share=True, seed=0):
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(share)
        assert len(batches) == 2 and batches[0][0].shape == (64, 3, 32, 32)
        convs = sum(1 for m in model.modules() if type(m).__name__ == "ReLUConvNorm")
        values = {
            "params": Score(float(sum(p.numel() for p in model.parameters())), 0.002),
            "conv_ops": Score(float(convs), 0.001 if share else 0.003),
            "broken": Score(None, 0.0005, "stand-in failure"),
        }
        return {name: values[name] for name in proxies}


PROXIES = ("params", "conv_ops", "broken")


@pytest.fixture
def cells(tmp_path):
    write_truth(tmp_path / "truth.csv", n=12, seed=1)
    return read_nb201_truth(tmp_path / "truth.csv")


def config(**overrides) -> BenchConfig:
    return BenchConfig(**{"data": "synthetic", "proxies": PROXIES, **overrides})


def test_benchmark_reports_correlations_timings_and_failures(cells):
    scorer = StandInScorer()
    out = run_proxy_bench(cells, config(no_share=True, no_share_limit=3), scorer, progress=False)
    json.dumps(out, allow_nan=False)  # plain JSON: no NaN
    assert scorer.calls == [True, False] * 3 + [True] * 9  # unshared right after shared
    truth = [c.test_accuracy for c in cells]
    params = [
        sum(p.numel() for p in bench.build_cell(c.arch, 10, 3, 0, "cpu").parameters())
        for c in cells
    ]
    assert out["proxies"]["params"]["spearman"] == round(stats.spearmanr(params, truth)[0], 4)
    assert out["proxies"]["broken"] == {
        **dict.fromkeys(("spearman", "kendall", "spearman_all", "kendall_all"), None),
        **dict.fromkeys(("spearman_evaluation", "kendall_evaluation"), None),
        "seconds_per_arch": 0.0005,
        "failures": 12,
        "first_error": "stand-in failure",
        "no_share_seconds_per_arch": 0.0005,
    }
    assert out["proxies"]["conv_ops"]["seconds_per_arch"] == 0.001
    assert out["proxies"]["conv_ops"]["no_share_seconds_per_arch"] == 0.003
    assert out["sample"] == 12 and out["split"] == {
        "calibration": 5,
        "evaluation": 7,
        "folds": 5,
        "headline": "spearman_evaluation",
        "explored_prefix": 386,
    }
    assert out["no_share_cells"] == 3 and out["no_share_seconds_per_arch"] > 0
    assert out["suite_seconds_per_arch"] > 0 and out["peak_rss_bytes"] > 10_000_000
    assert out["wall_seconds"] > 0
    for ensemble in ("rank", "calibrated"):
        for key in ("spearman", "kendall"):
            assert -1 <= out["ensembles"][ensemble][key] <= 1
    calibrated = out["ensembles"]["calibrated"]
    assert -1 <= calibrated["spearman_calibration_split"] <= 1
    assert -1 <= calibrated["spearman_all"] <= 1 and len(calibrated["spearman_per_fold"]) == 5
    assert set(calibrated["weights"]) == {f for p in PROXIES for f in (p, f"{p}:log")}
    assert out["ensembles"]["rank"]["proxies"] == list(PROXIES)  # no near-copies among them


def az_values(model) -> dict[str, float]:
    """AZ-NAS's four names on the stand-in's values (one of them reversed)."""
    convs = float(sum(1 for m in model.modules() if type(m).__name__ == "ReLUConvNorm"))
    size = float(sum(p.numel() for p in model.parameters()))
    return dict(zip(AZNAS_PROXIES, (convs, -convs, size / 7, size), strict=True))


def az_scorer(model, batches, proxies, *, share=True, seed=0):
    values = az_values(model)
    return {name: Score(values[name], 0.001) for name in proxies}


def test_the_aznas_ensemble_is_its_four_proxies_rank_aggregated(cells):
    out = run_proxy_bench(cells, config(proxies=AZNAS_PROXIES), az_scorer, progress=False)
    rows = [az_values(bench.build_cell(c.arch, 10, 3, 0, "cpu")) for c in cells]
    # AZ-NAS's rank_agg by hand: sum over the four of log(rank / N), ties at their mean rank.
    n = len(rows)
    total = [0.0] * n
    for name in AZNAS_PROXIES:
        column = [row[name] for row in rows]
        for i, v in enumerate(column):
            below, equal = sum(w < v for w in column), sum(w == v for w in column)
            total[i] += math.log((below + (equal + 1) / 2) / n)
    truth = [c.test_accuracy for c in cells]
    expected = round(stats.spearmanr(total, truth)[0], 4)
    assert out["ensembles"]["aznas"]["spearman"] == expected
    assert out["ensembles"]["aznas"]["proxies"] == list(AZNAS_PROXIES)
    three = config(proxies=AZNAS_PROXIES[:3])
    assert "aznas" not in run_proxy_bench(cells, three, az_scorer, progress=False)["ensembles"]


def test_calibration_never_sees_the_evaluation_split(cells, monkeypatch):
    fits: list[list[float]] = []
    fit = CalibratedEnsemble.fit

    def spy(self, features, target, seed=0):
        fits.append(sorted(target))
        return fit(self, features, target, seed)

    monkeypatch.setattr(CalibratedEnsemble, "fit", spy)
    out = run_proxy_bench(cells, config(calibration_fraction=0.5), StandInScorer(), progress=False)
    calibration, evaluation = split_indices(len(cells), 0.5, seed=0)
    truth = np.array([c.test_accuracy for c in cells])
    # the headline fit: the calibration cells only
    assert fits[0] == sorted(truth[calibration])
    assert not set(fits[0]) & set(truth[evaluation])
    # then the cross-fit's, one per fold, each on every cell but its fold
    folds = fold_indices(len(cells), 5, seed=0)
    assert fits[1:] == [sorted(np.delete(truth, fold)) for fold in folds]
    assert out["ensembles"]["calibrated"]["folds"] == 5


def test_the_rank_ensemble_leaves_out_near_copies_and_can_report_them(tmp_path):
    write_truth(tmp_path / "truth.csv", n=20, seed=2)
    cells = read_nb201_truth(tmp_path / "truth.csv")
    truth = [c.test_accuracy for c in cells]
    names = ("params", "flops", "fisher", "grad_norm", "zico")
    run = config(proxies=names, report_near_copies=True)
    out = run_proxy_bench(cells, run, OracleScorer(truth), progress=False)
    assert out["ensembles"]["rank"]["proxies"] == ["flops", "grad_norm", "zico"]
    near = out["near_copies"]
    assert near["rank_all_proxies"]["proxies"] == list(names)
    assert len(near["pairs"]) == 10 and all(row["spearman"] == 1.0 for row in near["pairs"])
    assert "near_copies" not in run_proxy_bench(cells, config(), StandInScorer(), progress=False)


def test_unexplored_figures_use_only_evaluation_cells_past_the_explored_prefix(tmp_path):
    write_truth(tmp_path / "truth.csv", n=30, seed=3)
    cells = read_nb201_truth(tmp_path / "truth.csv")
    truth = np.array([c.test_accuracy for c in cells])
    calibration, evaluation = split_indices(len(cells), 0.4, seed=0)
    # right on the unexplored evaluation cells, reversed on every other cell
    fresh = evaluation[evaluation >= 12]
    scores = np.where(np.isin(np.arange(len(cells)), fresh), truth, -truth)
    run = config(proxies=("a", "b"), explored_prefix=12)
    out = run_proxy_bench(cells, run, OracleScorer(scores.tolist()), progress=False)
    rank, calibrated = out["ensembles"]["rank"], out["ensembles"]["calibrated"]
    assert rank["spearman_evaluation_unexplored"] == 1.0 > rank["spearman_evaluation"]
    assert rank["unexplored_cells"] == calibrated["unexplored_cells"] == len(fresh) > 2
    fitted = proxy_stats.fit_calibrated(
        {"a": list(scores), "b": list(scores)}, truth, calibration, 0
    )
    on_fresh = fitted.predict({"a": list(scores[fresh]), "b": list(scores[fresh])})
    expected = rank_correlations(on_fresh, truth[fresh])["spearman"]
    assert calibrated["spearman_evaluation_unexplored"] == expected
    assert calibrated["calibration_fit"] == "bench" and out["split"]["explored_prefix"] == 12
    default = run_proxy_bench(
        cells, config(proxies=("a", "b")), OracleScorer(list(scores)), progress=False
    )
    assert default["ensembles"]["calibrated"]["spearman_evaluation_unexplored"] is None  # 30 < 386


def test_the_calibration_fit_option_chooses_the_fit(cells):
    engine = run_proxy_bench(
        cells, config(calibration_fit="default"), StandInScorer(), progress=False
    )
    weights = engine["ensembles"]["calibrated"]["weights"]
    assert set(weights) == set(PROXIES)  # one basis
    assert engine["ensembles"]["calibrated"]["calibration_fit"] == "default"
    assert set(proxy_stats.CALIBRATION_FITS) == {"bench", "default", "bench-normal"}
    assert proxy_stats.CALIBRATION_FITS["default"] == FitSettings()
    with pytest.raises(ValueError, match="calibration fit"):
        config(calibration_fit="other")


def test_the_text_summary_prints_every_proxy_and_ensemble(cells, capsys):
    from winnow.service.cli.bench import _print_proxies_summary

    out = run_proxy_bench(cells, config(report_near_copies=True), StandInScorer(), progress=False)
    _print_proxies_summary(out)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"12 NAS-Bench-201 cells on {out['device']}"
    assert "7 evaluation cells" in printed[1] and "5-fold cross-fit" in printed[1]
    by_name = {line.split()[0]: line.split() for line in printed[3:]}
    params = out["proxies"]["params"]
    assert by_name["params"][1:3] == [
        f"{params['spearman_evaluation']:+.3f}",
        f"{params['spearman_all']:+.3f}",
    ]
    assert by_name["broken"][1:3] == ["n/a", "n/a"] and by_name["broken"][-1] == "12"
    for name in out["ensembles"]:
        assert by_name[name][1] == "ensemble"
    assert sum(line.startswith("near-copies?") for line in printed) == 3
    assert printed[-1].startswith("suite: ")


class OracleScorer:
    """Every proxy scores the i-th cell scored (the bench scores them in order) ``values[i]``."""

    def __init__(self, values: list[float]):
        self.values, self.calls = values, 0

    def __call__(self, model, batches, proxies, *, share=True, seed=0):
        value, self.calls = self.values[self.calls], self.calls + 1
        return {name: Score(value, 0.001) for name in proxies}


def test_every_proxy_and_ensemble_is_reported_on_the_same_evaluation_cells(tmp_path):
    write_truth(tmp_path / "truth.csv", n=20, seed=2)
    cells = read_nb201_truth(tmp_path / "truth.csv")
    truth = np.array([c.test_accuracy for c in cells])
    assert len(set(truth)) == len(truth)
    calibration, evaluation = split_indices(len(cells), 0.4, seed=0)
    # the truth itself on the evaluation cells, reversed on the calibration cells (onto 0..100, so
    # that the calibrated features cover the evaluation values): exactly +-1 on the evaluation
    # cells, and only there
    low, high = truth[calibration].min(), truth[calibration].max()
    reversed_ = 100 * (high - truth) / (high - low)
    oracle = np.where(np.isin(np.arange(len(cells)), evaluation), truth, reversed_)
    run = config(proxies=AZNAS_PROXIES)
    out = run_proxy_bench(cells, run, OracleScorer(oracle.tolist()), progress=False)
    for row in [*out["proxies"].values(), out["ensembles"]["rank"], out["ensembles"]["aznas"]]:
        assert row["spearman_evaluation"] == row["kendall_evaluation"] == 1.0
        assert row["spearman_all"] == row["spearman"] < 0.9
    # fitted on the calibration cells, where the proxies are reversed
    calibrated = out["ensembles"]["calibrated"]
    assert calibrated["spearman_evaluation"] == calibrated["spearman"] == -1.0
    assert calibrated["spearman_calibration_split"] == 1.0
    assert out["split"]["evaluation"] == len(evaluation) == 12


def test_cache_resumes_an_interrupted_run_and_makes_a_repeat_free(cells, tmp_path):
    cache = tmp_path / "scores.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_proxy_bench(cells, config(), StandInScorer(interrupt_after=5), cache, progress=False)
    assert len(cache.read_text().splitlines()) == 5  # every finished cell was written

    with cache.open("a") as f:
        f.write('{"config": "torn line from a cr')  # a crash mid-write
    resumed = StandInScorer()
    first = run_proxy_bench(cells, config(), resumed, cache, progress=False)
    assert len(resumed.calls) == 7 and first["cached_cells_reused"] == 5
    assert first["cache_lines_skipped"] == 1

    repeat = StandInScorer()
    second = run_proxy_bench(cells, config(), repeat, cache, progress=False)
    assert repeat.calls == [] and second["cached_cells_reused"] == 12
    assert second["proxies"] == first["proxies"] and second["ensembles"] == first["ensembles"]

    other_seed = StandInScorer()
    run_proxy_bench(cells, config(seed=1), other_seed, cache, progress=False)
    assert len(other_seed.calls) == 12  # scores depend on the seed: nothing reused


def test_a_scorer_that_raises_fails_that_cell_only_and_is_not_cached(cells, tmp_path):
    calls = []

    def flaky(model, batches, proxies, *, share=True, seed=0):
        calls.append(1)
        if len(calls) % 3 == 0:
            raise RuntimeError("out of memory")
        return StandInScorer()(model, batches, proxies, share=share, seed=seed)

    cache = tmp_path / "scores.jsonl"
    out = run_proxy_bench(cells, config(), flaky, cache, progress=False)
    failures = out["proxies"]["params"]["failures"]
    assert failures == 4 and out["proxies"]["conv_ops"]["failures"] == 4
    assert "RuntimeError: out of memory" in out["proxies"]["params"]["first_error"]
    assert len(cache.read_text().splitlines()) == 12 - failures


def test_same_cell_scores_the_same_whatever_comes_before():
    a = bench.build_cell(GOOD, 10, 3, seed=0, device="cpu")
    bench.build_cell(GOOD.replace("none~2", "nor_conv_1x1~2"), 10, 3, seed=0, device="cpu")
    b = bench.build_cell(GOOD, 10, 3, seed=0, device="cpu")
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert p.equal(q)


# --- the command line, on real data ---------------------------------------------------------


def real_scorer_available() -> bool:
    import winnow.proxies

    return hasattr(winnow.proxies, "score_model") and hasattr(winnow.proxies, "proxy_names")


def test_cli_errors_are_input_errors(capsys, tmp_path):
    code = main(["bench", "proxies", "--nb201", str(tmp_path / "no.csv"), "--data", "synthetic"])
    assert code == 2 and "no NAS-Bench-201 ground-truth file" in capsys.readouterr().err
    write_truth(tmp_path / "t.csv", n=4)
    code = main(["bench", "proxies", "--nb201", str(tmp_path / "t.csv"), "--data", "synthetic"])
    assert code == 2 and "--sample must be between 1 and 4" in capsys.readouterr().err


@pytest.mark.skipif(not real_scorer_available(), reason="winnow.proxies.score_model not built yet")
def test_cli_rejects_unknown_proxies(capsys, tmp_path):
    write_truth(tmp_path / "t.csv", n=4)
    argv = ["bench", "proxies", "--nb201", str(tmp_path / "t.csv"), "--data", "synthetic"]
    code = main([*argv, "--sample", "4", "--proxies", "synflow,bogus"])
    assert code == 2 and "unknown proxies ['bogus']" in capsys.readouterr().err


# The CI smoke size is ``--sample 20`` with every proxy; on this project's shared 2-core CPU a cell
# costs 1 to 75 s with every proxy (grasp, zen and zico dominate), so this test scores fewer
# cells with the cheaper proxies, including two that share passes, to stay quick.
SMOKE_SAMPLE = 4
SMOKE_PROXIES = ("params", "flops", "synflow", "snip", "naswot")


@pytest.mark.skipif(not real_scorer_available(), reason="winnow.proxies.score_model not built yet")
def test_cli_smoke_benchmark_on_real_data(capsys, shared_data, tmp_path):
    argv = [
        "bench",
        "proxies",
        "--nb201",
        str(shared_data / "nb201_cifar10.csv"),
        "--data",
        f"npz:{shared_data / 'cifar10_subset.npz'}",
        "--sample",
        str(SMOKE_SAMPLE),
        "--seed",
        "0",
        "--proxies",
        ",".join(SMOKE_PROXIES),
        "--calibration-fraction",
        "0.5",
        "--folds",
        "2",
        "--json",
        "--quiet",
        "--no-share",
        "--no-share-limit",
        "1",
        "--cache",
        str(tmp_path / "scores.jsonl"),
    ]
    code = main(argv)
    out, _ = capsys.readouterr()
    result = json.loads(out)  # the JSON alone on stdout
    assert code == 0
    assert set(result["proxies"]) == set(SMOKE_PROXIES)
    for row in result["proxies"].values():
        for key in ("spearman", "kendall"):
            assert row[key] is None or -1 <= row[key] <= 1
        assert row["seconds_per_arch"] >= 0 and 0 <= row["failures"] <= SMOKE_SAMPLE
        assert row["no_share_seconds_per_arch"] >= 0
    assert result["proxies"]["params"]["failures"] == 0
    for ensemble in result["ensembles"].values():
        assert all(-1 <= ensemble[k] <= 1 for k in ("spearman", "kendall"))
    assert -1 <= result["ensembles"]["calibrated"]["spearman_calibration_split"] <= 1
    assert result["suite_seconds_per_arch"] > 0 and result["no_share_seconds_per_arch"] > 0
    assert result["peak_rss_bytes"] > 0 and result["wall_seconds"] > 0
    assert result["sample"] == SMOKE_SAMPLE and result["split"] == {
        "calibration": 2,
        "evaluation": 2,
        "folds": 2,
        "headline": "spearman_evaluation",
        "explored_prefix": 386,
    }
    # the cross-fit end to end: 2 folds of 2 cells, each scored by a fit on the other
    assert -1 <= result["ensembles"]["calibrated"]["spearman_all"] <= 1
    # the near-copies wiring: params is left out of the rank ensemble when flops is in the run
    assert result["ensembles"]["rank"]["proxies"] == ["flops", "synflow", "snip", "naswot"]

    assert main(argv) == 0  # again, from the cache: nothing is rescored
    again = json.loads(capsys.readouterr().out)
    assert again["cached_cells_reused"] == SMOKE_SAMPLE
    assert again["proxies"] == result["proxies"] and again["ensembles"] == result["ensembles"]
