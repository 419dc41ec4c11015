"""The ``winnow`` command line: space validate / sample / describe and evaluate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from winnow.search_space import Candidate, load_space
from winnow.service.cli import main
from winnow.service.export.recipe import FORMAT

ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "examples" / "digits.yaml")
ISSUE_CELL = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_space_validate(capsys, tmp_path):
    code, out, _ = run(capsys, "space", "validate", DIGITS)
    assert code == 0 and "ok" in out and "digits-joint" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("architecture: {family: mlp}\nquantization: {weight_bits: 7}\n")
    code, _, err = run(capsys, "space", "validate", str(bad))
    assert code == 2 and "quantization.weight_bits" in err and "2, 3, 4, 6, 8, 32" in err


def test_space_sample_prints_valid_deterministic_candidates(capsys):
    code, out, _ = run(capsys, "space", "sample", DIGITS, "-n", "5", "--seed", "0")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 5
    space = load_space(DIGITS)
    for line in lines:
        space.validate_candidate(Candidate.from_json(line))
    assert run(capsys, "space", "sample", DIGITS, "-n", "5", "--seed", "0")[1] == out


def test_space_describe_nb201(capsys, tmp_path):
    archs = tmp_path / "archs.txt"
    archs.write_text(f"{ISSUE_CELL}\n\n{ALL_NONE}\n")
    code, out, _ = run(
        capsys, "space", "describe", "--space", "nb201", "--archs-file", str(archs), "--json"
    )
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert code == 0
    assert [(r["arch"], r["params"]) for r in rows] == [(ISSUE_CELL, 1_288_506), (ALL_NONE, 73_306)]
    assert rows[0]["flops"] > rows[1]["flops"] > 0


def test_evaluate_json_on_digits(capsys):
    code, out, err = run(
        capsys,
        "evaluate",
        "--space",
        DIGITS,
        "--candidate",
        str(ROOT / "examples" / "digits-recipe.json"),
        "--dataset",
        "digits",
        "--steps",
        "30",
        "--json",
    )
    result = json.loads(out)
    assert code == 0, result
    for key in (
        "status",
        "accuracy",
        "params",
        "flops",
        "model_bytes",
        "bitops",
        "latency_ms",
        "peak_memory_bytes",
        "loss_curve",
    ):
        assert key in result
    assert result["status"] == "ok" and 0.5 < result["accuracy"] <= 1
    assert "epoch 1/2" in err  # 30 steps of batch 64 span two epochs of digits


def test_evaluate_nb201_arch_and_a_failure_exit_code(capsys):
    code, out, _ = run(
        capsys,
        "evaluate",
        "--space",
        "nb201",
        "--arch",
        ALL_NONE,
        "--dataset",
        "synthetic:3x8x8",
        "--steps",
        "1",
        "--json",
        "--quiet",
    )
    assert code == 0 and json.loads(out)["params"] == 73_306
    code, out, _ = run(
        capsys,
        "evaluate",
        "--space",
        "nb201",
        "--arch",
        ALL_NONE,
        "--dataset",
        "synthetic:12",
        "--steps",
        "1",
        "--json",
        "--quiet",
    )
    result = json.loads(out)
    assert code == 1 and result["status"] == "failed" and "image inputs" in result["error"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["evaluate", "--space", "nb201", "--arch", "|bad~0|", "--dataset", "digits"],
            "arch string",
        ),
        (["evaluate", "--space", "nope.yaml", "--dataset", "digits"], "no search-space file"),
        (["evaluate", "--space", DIGITS, "--arch", ALL_NONE, "--dataset", "digits"], "nb201"),
        (["evaluate", "--space", DIGITS, "--dataset", "imagenet"], "unknown dataset"),
        (["evaluate", "--space", DIGITS, "--dataset", "npz:/no/such.npz"], "no such file"),
    ],
)
def test_bad_input_exits_2_with_a_message(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


def test_candidate_outside_the_space_is_refused(capsys):
    recipe = json.loads((ROOT / "examples" / "digits-recipe.json").read_text())
    recipe["optimizer"]["lr"] = 5.0
    code, _, err = run(
        capsys,
        "evaluate",
        "--space",
        DIGITS,
        "--candidate",
        json.dumps(recipe),
        "--dataset",
        "digits",
    )
    assert code == 2 and "lr" in err


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "winnow"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "evaluate" in done.stdout


def test_a_reader_that_stops_early_gets_no_error(tmp_path):
    """`winnow ... | head -1`: the closed pipe ends the command quietly, with exit code 0."""
    command = (
        f"{sys.executable} -m winnow.service.cli space sample {ROOT / 'examples' / 'digits.yaml'}"
        ' -n 20000 --seed 0 | head -1; echo "exit=${PIPESTATUS[0]}" >&2'
    )
    done = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert json.loads(done.stdout.splitlines()[0])["architecture"]  # the first candidate
    assert done.stderr.strip() == "exit=0", done.stderr


def _curve_of(capsys, *argv: str) -> list[float]:
    code, out, _ = run(capsys, "evaluate", *argv, "--steps", "5", "--json", "--quiet")
    result = json.loads(out)
    assert code == 0, result
    return result.get("accuracy_curve", [])  # left out when not measured


def test_evaluate_honours_a_recipes_eval_every_epoch_and_its_flag(capsys, tmp_path):
    candidate = json.loads((ROOT / "examples" / "digits-recipe.json").read_text())
    recipe = tmp_path / "recipe.json"
    for stored in (True, False):
        task = {"dataset": "digits", "eval_every_epoch": stored}
        training = {"task": task, "epochs": 1, "seed": 0}
        recipe.write_text(
            json.dumps({"format": FORMAT, "candidate": candidate, "training": training})
        )
        assert len(_curve_of(capsys, "--recipe", str(recipe))) == (1 if stored else 0)
        assert _curve_of(capsys, "--recipe", str(recipe), "--no-eval-every-epoch") == []
        assert len(_curve_of(capsys, "--recipe", str(recipe), "--eval-every-epoch")) == 1
    plain = ("--space", DIGITS, "--dataset", "digits")
    assert len(_curve_of(capsys, *plain)) == 1  # on by default, as task.eval_every_epoch is
    assert _curve_of(capsys, *plain, "--no-eval-every-epoch") == []
