"""Export formats: the registry, the ``recipe`` format byte for byte, the ``format`` field of
``ExportRecipe`` (unknown formats refused with the allowed ones), and a registered extra format
that the server, the SDK and ``winnow export --format`` all use."""

from __future__ import annotations

import json
import re

import grpc
import pytest

from winnow.search_space.registry import UnknownNameError
from winnow.service import export
from winnow.service.cli import main
from winnow.service.client import WinnowError, _inside
from winnow.v1 import search_pb2 as pb

RECIPE = {"format": "winnow.recipe/v1", "trial_id": 3, "candidate": {"b": 1, "a": [1, 2]}}


def two_files(recipe: dict) -> dict[str, bytes]:
    """A stand-in format of two files, one in a subfolder."""
    return {"trial.txt": str(recipe["trial_id"]).encode(), "model/candidate.json": b"{}"}


def test_recipe_is_the_first_format_and_unknown_ones_are_listed():
    names = export.EXPORT_FORMATS.names()
    assert names[0] == "recipe" and {"pytorch", "lightning", "weights", "onnx"} <= set(names)
    assert export.DEFAULT_FORMAT == "recipe"
    with pytest.raises(UnknownNameError, match="unknown export format 'tflite'; allowed: recipe"):
        export.EXPORT_FORMATS.get("tflite")


def test_the_recipe_format_is_the_recipe_json_that_winnow_export_writes():
    text = json.dumps(RECIPE, indent=2, sort_keys=True)
    assert export.recipe.to_json(RECIPE) == text
    assert export.EXPORT_FORMATS.get("recipe")(RECIPE) == {"recipe.json": (text + "\n").encode()}


def test_export_formats_through_the_server_the_sdk_and_the_cli(client, tmp_path, tiny_spec):
    search = client.submit(tiny_spec())
    search.wait()
    path = tmp_path / "recipe.json"
    recipe = search.export(path=path)
    assert path.read_bytes() == (json.dumps(recipe, indent=2, sort_keys=True) + "\n").encode()
    assert search.export(path=tmp_path / "again.json", format="recipe") == recipe
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()
    # an empty format is the recipe (clients from before the field)
    reply = client.stub.ExportRecipe(pb.ExportRecipeRequest(search_id=search.id))
    assert dict(reply.files) == {"recipe.json": path.read_bytes()}

    with pytest.raises(WinnowError, match="'format': unknown export format 'tflite'") as raised:
        search.export(format="tflite")
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT.name
    assert "allowed: recipe" in raised.value.message

    with export.EXPORT_FORMATS.registered("two_files", two_files):
        assert search.export(path=tmp_path / "bundle", format="two_files") == recipe
        args = [search.id, "--out", str(tmp_path / "cli"), "--format", "two_files"]
        assert main(["export", *args, "--address", client.address]) == 0
    for folder in ("bundle", "cli"):
        assert (tmp_path / folder / "trial.txt").read_text() == str(recipe["trial_id"])
        assert (tmp_path / folder / "model" / "candidate.json").read_bytes() == b"{}"
    unknown = [search.id, "--out", str(tmp_path / "x"), "--format", "nope"]
    assert main(["export", *unknown, "--address", client.address]) == 2
    assert not (tmp_path / "x").exists()


def test_bundle_files_stay_inside_the_folder(tmp_path):
    assert _inside(tmp_path, "a/b.json") == tmp_path / "a" / "b.json"
    for name in ("../escape.txt", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(WinnowError, match="outside the folder"):
            _inside(tmp_path, name)


def test_winnow_evaluate_trains_an_exported_recipe_again_and_reproduces_it(
    client, tmp_path, tiny_spec, capsys
):
    """The file `winnow export` writes is accepted by `winnow evaluate` (as --recipe, and as a
    --candidate), which trains it on its task for its epochs with its seed: same metrics."""
    search = client.submit(tiny_spec())
    search.wait()
    path = tmp_path / "recipe.json"
    assert main(["export", search.id, "--out", str(path), "--address", client.address]) == 0
    stored = json.loads(path.read_text())
    capsys.readouterr()

    for argv in (["--recipe", str(path)], ["--candidate", str(path)]):
        assert main(["evaluate", *argv, "--device", "cpu", "--json", "--quiet"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["accuracy"] == stored["metrics"]["accuracy"]  # exactly: same seed, CPU
        assert out["params"] == stored["metrics"]["params"]
        assert out["candidate"] == stored["candidate"]
        assert out["stored"] == stored["metrics"]
        assert out["reproduced"] is True and out["differ"] == []

    # another seed trains another network: the comparison says so
    assert main(["evaluate", "--recipe", str(path), "--seed", "7", "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["differ"] == ["accuracy"]
    assert "not reproduced: accuracy" in captured.err

    assert main(["evaluate", "--recipe", str(path), "--quiet"]) == 0
    summary = capsys.readouterr().out
    assert "stored" in summary and "reproduced  yes" in summary
    params = f"{int(stored['metrics']['params']):,}"  # stored as a float; shown alike, in full
    assert re.search(rf"^params +{params} +{params}$", summary, re.M), summary


def test_a_file_that_is_not_a_recipe_is_refused_naming_the_field(tmp_path, capsys):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"format": "winnow.recipe/v1", "candidate": {}}))
    assert main(["evaluate", "--recipe", str(path)]) == 2
    assert "field 'training': missing" in capsys.readouterr().err
