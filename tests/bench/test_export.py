"""The export benchmark on a small sample (the full run is `winnow bench export --sample 300`):
every format exports every candidate and agrees with winnow's network, and a wrong export is
counted as failed with its reason."""

from __future__ import annotations

import json

from winnow.bench import export as bench_export
from winnow.service.cli import main

FORMATS = {"recipe", "pytorch", "weights", "lightning", "onnx"}


def test_every_format_exports_a_small_sample_exactly(capsys):
    assert main(["bench", "export", "--sample", "6", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["candidates"] == 6 and set(report["formats"]) == FORMATS
    for name, tally in report["formats"].items():
        assert (tally["ok"], tally["failed"]) == (6, 0), (name, tally["failures"])
    assert report["formats"]["pytorch"]["max_abs_diff"] == 0.0  # bit for bit
    assert report["formats"]["weights"]["max_abs_diff"] == 0.0  # loaded strictly, same outputs
    assert report["formats"]["lightning"]["max_abs_diff"] is None  # not measured: compiled
    assert report["formats"]["onnx"]["max_abs_diff"] is not None
    assert report["seconds_per_export"] > 0


def test_the_sample_covers_every_family_round_robin():
    recipes = bench_export.sample_recipes(6, seed=0)
    families = [r["candidate"]["architecture"]["family"] for r in recipes]
    assert families == ["mlp", "macro", "nb201"] * 2


def test_a_wrong_recipe_export_is_counted_as_failed(monkeypatch):
    writer = bench_export.EXPORT_FORMATS.get("recipe")

    def widens_the_mlp(data):  # a writer that changes the network it describes
        recipe = json.loads(writer(data)["recipe.json"])
        recipe["candidate"]["architecture"]["width"] *= 2
        return {"recipe.json": json.dumps(recipe).encode()}

    monkeypatch.setitem(bench_export.EXPORT_FORMATS._entries, "recipe", widens_the_mlp)
    mlp = bench_export.sample_recipes(1, seed=0)[0]
    tally = bench_export.FormatTally()
    bench_export.check_recipe(mlp, tally)
    assert (tally.ok, tally.failed) == (0, 1)
