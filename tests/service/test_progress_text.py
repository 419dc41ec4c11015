"""What the bars and the status line say: the running trials' epochs from a search's events,
and one trial's values (the front's leader) rather than each objective's best from different
trials."""

from __future__ import annotations

from winnow.service.client import bar_postfix
from winnow.service.progress_text import (
    RunningTrials,
    confirm_text,
    confirmed_label,
    front_text,
    hypervolume_label,
    status_front_text,
)

ORDER = ["accuracy", "model_bytes"]
PROGRESS = {
    "trained": 5,
    "hypervolume": 0.5,
    "best": {"accuracy": 0.98, "model_bytes": 6992.0},  # from two different trials
    "front_size": 3,
    "leader": {"trial_id": 12, "values": {"model_bytes": 8010.0, "accuracy": 0.98}},
}


def test_the_supernet_training_is_named_while_the_search_waits_for_it():
    running = RunningTrials()
    running.observe("supernet_training", {"key": "k", "family": "macro", "epochs": 5})
    assert running.text() == "training the supernet, epoch 0/5"
    running.observe("supernet_epoch", {"key": "k", "epoch": 2, "epochs": 5, "loss": 1.0})
    assert running.text() == "training the supernet, epoch 2/5"
    running.observe("supernet_trained", {"key": "k"})
    assert running.text() == ""


def test_running_trials_follow_started_epoch_and_finished_events():
    running = RunningTrials()
    running.observe("trial_started", {"trial_id": 3, "rung": 1, "epochs": 9})
    running.observe("trial_started", {"trial_id": 4, "rung": 0, "epochs": 3})
    assert running.text() == "running #3 epoch 0/9, #4 epoch 0/3"
    running.observe("epoch_finished", {"trial_id": 3, "rung": 1, "epoch": 2, "epochs": 9})
    running.observe("epoch_finished", {"trial_id": 4, "rung": 0, "epoch": 1, "epochs": 3})
    assert running.text() == "running #3 epoch 2/9, #4 epoch 1/3"
    running.observe("trial", {"trial_id": 4, "stage": "train", "status": "ok"})
    running.observe("trial", {"trial_id": 3, "stage": "proxy", "status": "ok"})  # not a run's end
    assert running.text() == "running #3 epoch 2/9"
    running.observe("search_resumed", {"requeued": 1})  # its runs start again
    assert running.text() == ""
    # a continued rung: 6 epochs to run of the 9 the network reaches, from epoch 3
    running.observe("trial_started", {"trial_id": 5, "rung": 2, "epochs": 9, "epochs_to_run": 6})
    assert running.text() == "running #5 epoch 3/9"


def test_two_confirmation_seeds_of_one_trial_run_side_by_side_and_end_apart():
    running = RunningTrials()
    for seed in (1, 2):
        stage = f"confirm:{seed}"
        running.observe("trial_started", {"trial_id": 3, "epochs": 2, "stage": stage, "seed": seed})
    epoch = {"trial_id": 3, "stage": "confirm:2", "epoch": 1, "epochs": 2}
    running.observe("epoch_finished", epoch)
    assert running.text() == "running #3 seed 1 epoch 0/2, #3 seed 2 epoch 1/2"
    running.observe("trial", {"trial_id": 3, "stage": "confirm:1", "status": "ok"})
    assert running.text() == "running #3 seed 2 epoch 1/2"
    running.observe("trial", {"trial_id": 3, "stage": "confirm:2", "status": "ok"})
    assert running.text() == ""


def test_many_running_trials_are_counted_past_the_first_few():
    running = RunningTrials()
    for trial_id in range(6):
        running.observe("trial_started", {"trial_id": trial_id, "epochs": 2})
    assert running.text().endswith("#3 epoch 0/2, +2 more")


def test_the_front_text_names_one_trials_values_in_objective_order():
    text = front_text(PROGRESS, ORDER)
    assert text == "front 3 points; best accuracy: #12 accuracy=0.98 model_bytes=8010"
    assert "6992" not in text  # the other trial's model_bytes is not mixed in
    assert front_text({**PROGRESS, "leader": None, "best": {}}, ORDER) == "front -"
    big = {"trial_id": 1, "values": {"accuracy": 0.93781, "model_bytes": 51790.0}}
    text = front_text({**PROGRESS, "front_size": 1, "leader": big}, ORDER)
    assert text == "front 1 point; best accuracy: #1 accuracy=0.9378 model_bytes=51790"


def test_a_server_without_leaders_gets_its_per_objective_bests_labelled():
    old = {"best": {"accuracy": 0.98, "model_bytes": 6992.0}, "front_size": 0, "leader": None}
    text = front_text(old, ORDER)
    assert text == "per-objective best (different trials): accuracy=0.98, model_bytes=6992"


def test_the_client_bar_shows_the_leader_the_hypervolume_and_the_running_epochs():
    running = RunningTrials()
    running.observe("trial_started", {"trial_id": 3, "epochs": 9})
    running.observe("epoch_finished", {"trial_id": 3, "epoch": 2, "epochs": 9})
    search = {
        "status": "running",
        "progress": PROGRESS,
        "spec": {"objectives": [{"name": "accuracy"}, {"name": "model_bytes"}]},
    }
    assert bar_postfix(search, running) == (
        "running; front 3 points; best accuracy: #12 accuracy=0.98 model_bytes=8010; HV 0.5; "
        "running #3 epoch 2/9"
    )


def test_a_front_below_the_top_rung_says_so():
    """No trial reached the top rung: the front is the highest rung's reached, never shown as
    if it were the completed trials'."""
    lower = PROGRESS | {"front_epochs": 3, "top_epochs": 9}
    assert front_text(lower, ORDER).startswith(
        "front 3 points; front at 3 epochs (top rung 9 never reached); best accuracy: #12 "
    )
    assert "never reached" not in front_text(PROGRESS | {"front_epochs": 9, "top_epochs": 9}, ORDER)


def test_a_confirmed_leader_is_one_statement_labelled_as_a_mean():
    """Once the front is confirmed the status line names the leader's means over its seeds
    alone: the single runs' per-objective bests beside them read as a second answer."""
    figures = {"accuracy": {"mean": 0.975556, "std": 0.01, "lower": 0.96}, "seeds": 3}
    leader = {"trial_id": 11, "values": {"accuracy": 0.975556, "model_bytes": 8010.0}}
    confirmed = PROGRESS | {"leader": leader | {"confirmed": figures}}
    confirmed["best"] = {"accuracy": 0.973333, "model_bytes": 6992.0}  # single runs
    text = status_front_text(confirmed, ORDER, digits=6)
    assert text == (
        "front 3 points; best accuracy (confirmed, mean of 3 seeds): #11 accuracy=0.975556 "
        "model_bytes=8010"
    )
    assert "0.973333" not in text and "per-objective" not in text
    single = status_front_text(PROGRESS, ORDER)  # not confirmed: both, each labelled
    assert single == (
        "front 3 points; best accuracy: #12 accuracy=0.98 model_bytes=8010; "
        "per-objective best (different trials): accuracy=0.98, model_bytes=6992"
    )


def test_a_confirmation_cut_short_says_partly_confirmed_once_the_search_ended():
    progress = {"confirm_runs": 6, "confirm_done": 2}
    assert confirm_text(progress) == "confirming the front: 2/6 runs"
    assert confirm_text(progress, ended=True) == (
        "front partly confirmed: 2/6 runs (each recipe's mean counts the seeds it got)"
    )
    assert confirm_text(progress | {"confirm_done": 6}, ended=True) == "front confirmed: 6 runs"


def test_failed_confirmation_runs_are_said_not_counted_as_confirmed():
    progress = {"confirm_runs": 6, "confirm_done": 6, "confirm_failed": 1}
    assert confirm_text(progress, ended=True) == "front confirmed: 6 runs (1 failed)"
    partly = progress | {"confirm_done": 4}
    assert confirm_text(partly) == "confirming the front: 4/6 runs (1 failed)"
    assert confirm_text(partly, ended=True) == (
        "front partly confirmed: 4/6 runs (1 failed; each recipe's mean counts the seeds it got)"
    )


def test_a_front_whose_time_budget_the_rungs_spent_is_not_confirmed():
    progress = {"confirm_runs": 6, "confirm_done": 0}
    assert confirm_text(progress, ended=True) == (
        "front not confirmed: the time budget was spent before its 6 runs"
    )
    assert confirm_text(progress) == "confirming the front: 0/6 runs"  # still running


def test_the_hypervolume_beside_a_confirmed_leader_is_labelled_as_single_runs():
    figures = {"accuracy": {"mean": 0.9, "std": 0.01, "lower": 0.89}, "seeds": 3}
    leader = {"trial_id": 1, "values": {"accuracy": 0.9}, "confirmed": figures}
    assert hypervolume_label(PROGRESS | {"leader": leader}) == " (single runs)"
    assert hypervolume_label(PROGRESS) == ""
    assert confirmed_label(leader) == " (confirmed, mean of 3 seeds)"


def test_the_live_bars_label_the_hypervolume_beside_a_confirmed_leader():
    """The client's bar and the local engine's bar say what the status line says: beside a
    confirmed leader (a mean), the hypervolume is the single runs' front's."""
    from types import SimpleNamespace

    from winnow.service.cli.search import engine_bar_postfix

    figures = {"accuracy": {"mean": 0.9, "std": 0.01, "lower": 0.89}, "seeds": 3}
    leader = {"trial_id": 1, "values": {"accuracy": 0.9}, "confirmed": figures}
    confirmed = PROGRESS | {"leader": leader}
    search = {"status": "running", "progress": confirmed, "spec": {"objectives": []}}
    assert "; HV (single runs) 0.5" in bar_postfix(search, RunningTrials())
    counts = {"proposals": 4, "cache_hits": 0, "pruned": 1}
    engine = SimpleNamespace(
        counts=counts,
        progress=lambda: confirmed,
        objectives=[SimpleNamespace(name="accuracy")],
    )
    assert "; HV (single runs) 0.5" in engine_bar_postfix(engine, RunningTrials())
    engine.progress = lambda: PROGRESS
    assert "; HV 0.5" in engine_bar_postfix(engine, RunningTrials())
