"""The NB201 tabular oracle answers training from the table and runs every other stage."""

from __future__ import annotations

import pytest

from winnow.search_space import Candidate, Status, TrialSpec
from winnow.search_space.archs.nb201 import format_arch, parse_arch
from winnow.workers.executor import InProcessExecutor
from winnow.workers.oracle import NB201Oracle, OracleError

CELL = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)
OTHER = "|none~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|"


@pytest.fixture
def oracle(tmp_path):
    csv = tmp_path / "truth.csv"
    csv.write_text(f"arch,test_accuracy\n{CELL},93.5\n{OTHER},10.0\n")
    seen = []
    inner = InProcessExecutor(lambda spec, on_epoch: seen.append(spec.stage) or "ran")
    return NB201Oracle(csv, inner), seen


def nb201(cell: str) -> Candidate:
    return Candidate(architecture={"family": "nb201", "cell": cell})


def test_train_trials_are_answered_from_the_table(oracle):
    executor, seen = oracle
    result = executor.submit(TrialSpec(nb201(CELL), "digits", epochs=200)).result()
    assert result.status == Status.OK and result.metrics["accuracy"] == pytest.approx(0.935)
    assert result.metrics["params"] == 1_288_506  # counted on the built network
    assert executor.trained == 1 and seen == []


def test_other_stages_run_for_real(oracle):
    executor, seen = oracle
    assert executor.submit(TrialSpec(nb201(CELL), "digits", stage="proxy")).result() == "ran"
    assert seen == ["proxy"] and executor.trained == 0


def test_unknown_cells_and_families_are_errors(oracle):
    executor, _ = oracle
    missing = format_arch(parse_arch(CELL.replace("skip_connect~0", "none~0")))
    with pytest.raises(OracleError, match="not in the ground-truth table"):
        executor.submit(TrialSpec(nb201(missing), "digits")).result()
    mlp = Candidate(architecture={"family": "mlp", "depth": 1, "width": 8})
    with pytest.raises(OracleError, match="nb201 candidates"):
        executor.submit(TrialSpec(mlp, "digits")).result()
