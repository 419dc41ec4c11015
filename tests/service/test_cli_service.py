"""The client commands against a real server, `winnow demo`, the checked-in protobuf code and
the example specs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from winnow.search_space.spec import load_space
from winnow.service.cli import main
from winnow.service.demo import DEMO_SPEC
from winnow.service.search_spec import load_search_spec, parse_search_spec

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_client_commands_round_trip(server, capsys, tmp_path, tiny_spec):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    address = ("--address", server.address)

    code, out, _ = run(capsys, "submit", str(spec), "--wait", "--json", "--quiet", *address)
    submitted = json.loads(out)
    assert code == 0 and submitted["status"] == "finished"
    search_id = submitted["id"]

    code, out, _ = run(capsys, "status", search_id, "--json", *address)
    assert json.loads(out)["progress"]["trained"] == 3
    assert json.loads(out)["progress"]["candidates"] == 3
    code, out, _ = run(capsys, "status", search_id, *address)
    assert f"{search_id} tiny: finished; 3/3 candidates (3 runs, 3 epochs)" in out
    code, out, _ = run(capsys, "list", "--json", *address)
    assert [json.loads(line)["id"] for line in out.splitlines()] == [search_id]
    code, out, _ = run(capsys, "pareto", search_id, "--json", *address)
    front = json.loads(out)
    assert front and "accuracy" in front[0] and front[0]["epochs"] == 1  # the top rung's
    code, out, _ = run(capsys, "pareto", search_id, *address)
    assert "Pareto front" in out and "mlp[" in out and "never reached" not in out
    recipe = tmp_path / "out" / "recipe.json"
    code, out, _ = run(capsys, "export", search_id, "--out", str(recipe), *address)
    assert code == 0 and json.loads(recipe.read_text())["trial_id"] == front[0]["trial_id"]
    code, out, _ = run(capsys, "cancel", search_id, *address)
    assert "finished" in out  # a finished search stays finished


def test_export_and_cancel_print_json_with_absolute_paths(
    server, capsys, tmp_path, tiny_spec, monkeypatch
):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    address = ("--address", server.address)
    code, out, _ = run(capsys, "submit", str(spec), "--wait", "--json", "--quiet", *address)
    search_id = json.loads(out)["id"]
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "export", search_id, "--out", "recipe.json", "--json", *address)
    exported = json.loads(out)
    assert code == 0 and exported["search_id"] == search_id
    assert exported["path"] == str(tmp_path / "recipe.json")  # absolute, not as given
    assert json.loads((tmp_path / "recipe.json").read_text())["trial_id"] == exported["trial_id"]
    code, out, _ = run(capsys, "cancel", search_id, "--json", *address)
    assert code == 0 and json.loads(out)["status"] == "finished"


def test_client_errors_exit_2_with_the_servers_sentence(server, capsys):
    code, _, err = run(capsys, "status", "nope", "--address", server.address)
    assert code == 2 and "NOT_FOUND" in err and "no search 'nope'" in err


def test_token_file(make_server, capsys, tmp_path):
    server = make_server(token="from-a-file")
    token = tmp_path / "token"
    token.write_text("from-a-file\n")
    code, _, err = run(capsys, "list", "--address", server.address)
    assert code == 2 and "UNAUTHENTICATED" in err
    code, out, _ = run(capsys, "list", "--address", server.address, "--token-file", str(token))
    assert code == 0 and out == ""


def test_demo_runs_a_search_through_the_service(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --data-dir: the JSON's paths come out absolute
    code, out, err = run(capsys, "demo", "--json", "--max-trials", "4", "--data-dir", "demo")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result) == {"search_id", "pareto", "recipe_path", "pytorch_bundle", "db_url"}
    assert result["pareto"] and {"trial_id", "accuracy", "model_bytes"} <= set(result["pareto"][0])
    assert Path(result["recipe_path"]).parent == tmp_path / "demo"
    recipe = json.loads(Path(result["recipe_path"]).read_text())
    assert recipe["search_id"] == result["search_id"]
    assert result["db_url"] == f"sqlite:///{tmp_path / 'demo' / 'winnow.db'}"  # four slashes
    assert "Pareto front" in err
    bundle = Path(result["pytorch_bundle"])  # the best recipe as plain PyTorch
    assert bundle.parent == tmp_path / "demo" and (bundle / "model.py").is_file()
    assert {"train.py", "requirements.txt", "README.md"} <= {p.name for p in bundle.iterdir()}
    assert f"no winnow needed): {bundle}" in err


def test_checked_in_protobuf_code_matches_the_protos(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run(["bash", str(ROOT / "scripts/gen-protos.sh"), str(tmp_path)], check=True)
    generated = sorted((tmp_path / "winnow/v1").iterdir())
    assert generated, "nothing generated"
    for path in generated:
        assert path.read_text() == (ROOT / "winnow/v1" / path.name).read_text(), path.name


def test_examples_parse_and_the_demo_is_the_digits_example():
    for path in sorted((ROOT / "examples").glob("*-search.yaml")):
        load_search_spec(path)
    example = load_search_spec(ROOT / "examples/digits-search.yaml")
    assert parse_search_spec(DEMO_SPEC) == example
    assert load_space(ROOT / "examples/digits.yaml") == load_space("digits-joint")


def test_the_status_line_names_one_trials_values_and_labels_per_objective_bests(
    server, capsys, tmp_path, tiny_spec
):
    """accuracy and params: the leader's values are one completed trial's, and the bests of
    each objective (from different trials, as a rule) are labelled so."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(budget={"max_trials": 4})))
    address = ("--address", server.address)
    code, out, _ = run(capsys, "submit", str(spec), "--wait", "--json", "--quiet", *address)
    search_id = json.loads(out)["id"]
    _, out, _ = run(capsys, "status", search_id, *address)
    from winnow.service.client import Client

    with Client(server.address) as client:
        search = client.search(search_id)
        front = search.pareto()
        rows = {r["trial_id"]: r["metrics"] for r in search.trials()}
    leader = max(front, key=lambda p: p["accuracy"])  # the front's best on the first objective
    metrics = rows[leader["trial_id"]]
    size = f"{len(front)} point{'s' if len(front) != 1 else ''}"
    assert (
        f"; front {size}; best accuracy: #{leader['trial_id']} "
        f"accuracy={metrics['accuracy']:.6g} params={metrics['params']:.0f}; "
    ) in out
    best = max(m["accuracy"] for m in rows.values()), min(m["params"] for m in rows.values())
    labelled = "per-objective best (different trials): accuracy={:.6g}, params={:.0f}"
    assert labelled.format(*best) in out


def test_the_status_of_a_cascade_shows_its_evidence_ladder(server, capsys, tmp_path, tiny_spec):
    """A real cascade on the digits (hashes, proxies and training all run): every candidate
    goes on to training, so its five results give each tier a tau."""
    screen = {"proxies": ["synflow", "params"], "keep_fraction": 1.0, "min_population": 1}
    cascade = {"name": "cascade", "sampler": "random", "rungs": [1], "screen": screen}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(strategy=cascade, budget={"max_trials": 5})))
    address = ("--address", server.address)
    code, out, _ = run(capsys, "submit", str(spec), "--wait", "--json", "--quiet", *address)
    search_id = json.loads(out)["id"]
    _, out, _ = run(capsys, "status", search_id, "--json", *address)
    ladder = {t["tier"]: t for t in json.loads(out)["progress"]["evidence_ladder"]}
    assert set(ladder) == {"params", "synflow", "ensemble"}
    done = ladder["params"]["n"]
    assert done == ladder["synflow"]["n"] and done >= 5 and ladder["params"]["tau"] is not None
    _, out, _ = run(capsys, "status", search_id, *address)
    line = f"  evidence ladder: Kendall tau against {done} screened, completed: params "
    assert line + f"{ladder['params']['tau']:.3f}" in out


def test_listed_searches_carry_their_stored_progress(make_server, tiny_spec):
    """A finished search's row in ``ListSearches`` shows what ``GetSearch`` shows (they were
    zeros: the listing sent no progress). A second server on the same store reads it from the
    store alone (no live engine)."""
    from winnow.service.client import Client

    first = make_server()
    with Client(first.address, timeout=20) as client:
        client.submit(tiny_spec()).wait()
    first.stop(grace=0.5)
    with Client(make_server().address, timeout=20) as client:
        [listed] = client.searches()
        got = client.search(listed["id"]).info()["progress"]
    progress = listed["progress"]
    assert progress["trained"] == 3 and progress["max_trials"] == 3
    counters = ("trained", "max_trials", "proposals", "cache_hits", "pruned", "failed")
    assert {k: progress[k] for k in counters} == {k: got[k] for k in counters}
    assert progress["best"] == pytest.approx(got["best"]) and got["best"]
    assert progress["hypervolume"] == pytest.approx(got["hypervolume"]) and got["hypervolume"] > 0


def test_serve_refuses_an_empty_token_file(capsys, tmp_path, monkeypatch):
    # An empty file used to mean "no token": the server would start with authentication off.
    from winnow.service.api.server import WinnowServer

    def started(self):
        raise AssertionError("the server started with authentication off")

    monkeypatch.setattr(WinnowServer, "start", started)
    empty = tmp_path / "token"
    empty.write_text("\n")
    db = f"sqlite:///{tmp_path / 'w.db'}"
    code, _, err = run(capsys, "serve", "--db", db, "--token-file", str(empty))
    assert code == 2 and f"token file {empty} is empty" in err


def test_a_client_command_refuses_an_empty_token_file(make_server, capsys, tmp_path, monkeypatch):
    server = make_server()  # no token: an empty file must not pass as "no token" either
    empty = tmp_path / "token"
    empty.write_text("")
    code, _, err = run(capsys, "list", "--address", server.address, "--token-file", str(empty))
    assert code == 2 and f"token file {empty} is empty" in err
    monkeypatch.setenv("WINNOW_TOKEN_FILE", str(empty))
    code, _, err = run(capsys, "list", "--address", server.address)
    assert code == 2 and "is empty" in err
