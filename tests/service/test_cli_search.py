"""``winnow search run|resume|list`` and ``winnow bench search`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from winnow.service.cli import main

ROOT = Path(__file__).resolve().parents[2]


def digits_search(tmp_path: Path, max_trials: int, rungs: list[int]) -> tuple[Path, str]:
    """A random search of the digits space written to a spec file, and a store URL."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"space: {ROOT / 'examples' / 'digits.yaml'}\ntask: {{dataset: digits}}\n"
        f"budget: {{max_trials: {max_trials}}}\nstrategy: {{name: random, rungs: {rungs}}}\n"
    )
    return spec, f"sqlite:///{tmp_path / 'cli.db'}"


def test_search_run_then_list(capsys, tmp_path):
    spec, store = digits_search(tmp_path, max_trials=3, rungs=[1])
    code = main(["search", "run", str(spec), "--db", store, "--json", "--quiet"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["trained"] == 3 and report["status"] == "finished"
    assert report["front"] and 0.0 <= report["front"][0]["accuracy"] <= 1.0
    # the front's points name their trial as every JSON output does (it said "number")
    assert all(isinstance(p["trial_id"], int) and "number" not in p for p in report["front"])
    assert main(["search", "list", "--store", store]) == 0  # the former spelling still works
    out, err = capsys.readouterr()
    assert [json.loads(line)["id"] for line in out.splitlines()] == [report["search_id"]]
    assert "--store is now spelled --db" in err


def test_demo_spec_resolves_its_space_next_to_it():
    from winnow.service.search_spec import load_search_spec

    spec = load_search_spec(ROOT / "examples" / "digits-search.yaml")
    assert spec.search_space.name == "digits-joint" and spec.strategy.cascade


def test_bad_inputs_exit_2(capsys, tmp_path):
    assert main(["search", "run", str(tmp_path / "missing.yaml"), "--quiet"]) == 2
    assert "no search-spec file" in capsys.readouterr().err
    store = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["search", "resume", "nope", "--db", store, "--quiet"]) == 2
    assert "no search 'nope'" in capsys.readouterr().err
    assert main(["bench", "search", "--oracle", "csv:x", "--data", "digits"]) == 2
    assert "nb201:CSV" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_search_smoke_on_the_real_oracle(capsys, shared_data, tmp_path):
    argv = [
        "bench", "search",
        "--oracle", f"nb201:{shared_data / 'nb201_cifar10.csv'}",
        "--data", f"npz:{shared_data / 'cifar10_subset.npz'}",
        "--strategies", "random,cascade", "--budget", "6", "--seeds", "2",
        "--screen-proxies", "synflow,params", "--store", f"sqlite:///{tmp_path / 'b.db'}",
        "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    random, cascade = result["strategies"]["random"], result["strategies"]["cascade"]
    assert set(random["best_at"]) == {"6"}
    assert 0 < random["best_at"]["6"]["q1"] <= random["best_at"]["6"]["median"] <= 94.38
    assert random["proxy_evaluations"] == 0 and random["cache_hits"] == 0
    assert cascade["proxy_evaluations"] > 0 and cascade["proposals"] >= 12
    assert result["engine_overhead_ms_median"] > 0


def test_a_search_whose_every_trial_fails_exits_1_and_says_why(capsys, tmp_path):
    """An SGD learning rate of 1e12 makes every trial's loss non-finite."""
    spec = tmp_path / "exploding.yaml"
    spec.write_text(
        "space:\n"
        "  architecture: {family: mlp, depth: 1, width: [16, 32], activation: relu}\n"
        "  normalization: none\n"
        "  optimizer: {name: sgd, lr: 1.0e+12, momentum: 0.0, nesterov: false,"
        " weight_decay: 0.0}\n"
        "task: {dataset: digits}\nbudget: {max_trials: 2}\nstrategy: {name: random, rungs: [1]}\n"
    )
    store = f"sqlite:///{tmp_path / 'cli.db'}"
    code = main(["search", "run", str(spec), "--db", store, "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1 and json.loads(captured.out)["status"] == "failed"
    assert "failed: no trial trained successfully; 2 of 2 failed rows: non-finite loss" in (
        captured.err
    )


def test_search_run_shows_the_running_trials_epochs_and_the_leader(capsys, tmp_path):
    spec, store = digits_search(tmp_path, max_trials=2, rungs=[3])
    assert main(["search", "run", str(spec), "--db", store]) == 0
    bar = capsys.readouterr().err
    for epoch in (0, 1, 2):  # each epoch shown while the trial runs (in this process)
        assert f"running #0 epoch {epoch}/3" in bar and f"running #1 epoch {epoch}/3" in bar
    assert "front 1 point; best accuracy: #" in bar


def test_search_run_reproducible_gives_the_same_front_twice(capsys, tmp_path):
    """Real training on the digits: a default second run is answered from the first's results
    (cache hits, then other proposals); ``--reproducible`` runs reuse nothing and agree."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "space:\n"
        "  architecture: {family: mlp, depth: 1, width: [16, 32], activation: relu}\n"
        "  optimizer: {name: adamw, lr: 0.01, batch_size: 64}\n"
        "task: {dataset: digits}\nbudget: {max_trials: 2, max_proposals: 4}\n"
        "objectives: [{name: accuracy}, {name: params, direction: minimize}]\n"
        "strategy: {name: cascade, sampler: random, rungs: [1]}\n"
    )
    store = f"sqlite:///{tmp_path / 'cli.db'}"

    def search_run(*flags: str) -> dict:
        argv = ["search", "run", str(spec), "--db", store, "--json", "--quiet", *flags]
        assert main(argv) == 0
        return json.loads(capsys.readouterr().out)

    assert search_run()["cache_hits"] == 0 and search_run()["cache_hits"] > 0
    first, second = search_run("--reproducible"), search_run("--reproducible")
    assert first["cache_hits"] == second["cache_hits"] == 0
    assert first["front"] and first["front"] == second["front"]
