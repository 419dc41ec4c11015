"""``winnow bench supernet-quant``: does elastic quantization rank (mlp architecture x
quantization policy) candidates as standalone training does?

On digits: ``candidates`` distinct candidates of ``SPACE`` are each trained standalone with
winnow's own training (``training.evaluate``, ``epochs`` epochs, scored on the test split as a
search scores them) under ``standalone_seeds`` seeds (``standalone_seed``: apart from the
supernet's); the ground truth is the mean accuracy over the seeds. How noisy one run is:
``standalone_seed_pair_kendall`` (the mean tau between two seeds' runs) and
``standalone_leave_one_out_kendall`` (the mean tau of one seed against the mean of the others);
neither bounds a score, since a score without training noise can rank the mean better than one
run does. One ``MLPSupernet`` is trained by the sandwich rule under sampled policies
(``supernet.sandwich``), for as many epochs as a standalone run (``supernet_steps``), on the
training data less a validation split carved from it; each candidate's inherited accuracy is its
extracted subnet's (BatchNorm statistics and activation ranges re-estimated on training batches)
on that validation split, never the test split. The criterion (issue 18): Kendall tau of
inherited against standalone accuracy >= 0.6 (``kendall``: against the seeds' mean;
``kendall_single_seed``: against standalone run 0 alone).

Ablations, each on the same candidates: a supernet trained at full precision only
(``kendall_no_quantization_sampling``), without distillation or the weight regularization,
subnets scored with the supernet's own running statistics and ranges
(``kendall_no_recalibration``), by validation loss (``kendall_inherited_loss``: no ties) or at
full precision (``kendall_inherited_full_precision``: does scoring under the policy add
anything?), the costs a search knows for free (``baselines``: params, model bytes, BitOPs;
``baselines_single_seed``: against standalone run 0 alone), and the equal-weight rank average
of the inherited accuracy with params or model bytes (``combined``: fitted on nothing).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from scipy.stats import kendalltau, rankdata, spearmanr

from winnow.bench.quantization_settings import STANDALONE_SEEDS
from winnow.search_space.candidate import Candidate
from winnow.search_space.datasets import Dataset, load_dataset
from winnow.search_space.params import RandomChooser
from winnow.search_space.spec import SearchSpace
from winnow.search_space.training import evaluate, test_accuracy
from winnow.search_space.trial import Status, TrialSpec
from winnow.supernet.mlp import MLPSupernet
from winnow.supernet.quantization import FLOAT_POLICY, recalibrate, sample_policy
from winnow.supernet.sandwich import SandwichConfig, train
from winnow.supernet.seam import steps_per_epoch

DATASET = "digits"
# Widths and bit widths spread far enough apart that accuracy differs between candidates by
# more than a 450-example test split's noise (digits-joint's 4/8/32 bits barely move an MLP).
SPACE: dict[str, Any] = {
    "name": "digits-elastic-quantization",
    "architecture": {
        "family": "mlp",
        "depth": [1, 2, 3],
        "width": [16, 32, 64, 128, 256],
        "activation": "relu",
    },
    "normalization": "batchnorm",
    "optimizer": {"name": "adamw", "lr": 3e-3, "schedule": "cosine", "batch_size": 64},
    "quantization": {
        "weight_bits": [2, 3, 4, 8, 32],
        "scope": "group",
        "activation_bits": [4, 8, 32],
        "granularity": ["per_channel", "per_tensor"],
        "symmetric": [True, False],
    },
}
VALIDATION_FRACTION = 0.2
BATCH_SIZE = SandwichConfig.batch_size  # the supernet's
EPOCHS = 10  # standalone training of each candidate
RECALIBRATION_BATCHES = 8
CRITERION = 0.6

Progress = Callable[[str], None]


def bench_space() -> SearchSpace:
    return SearchSpace.model_validate(SPACE)


def carve_validation(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """The dataset with a random ``fraction`` of its training split moved to the split it
    tests on: the validation split (the real test split is left out altogether)."""
    n = len(dataset.train_y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = round(n * fraction)
    val, fit = order[:held], order[held:]
    return dataclasses.replace(
        dataset,
        train_x=dataset.train_x[fit],
        train_y=dataset.train_y[fit],
        test_x=dataset.train_x[val],
        test_y=dataset.train_y[val],
    )


def distinct_candidates(space: SearchSpace, n: int, seed: int) -> list[Candidate]:
    rng, chosen = random.Random(seed), {}
    for _ in range(100 * n):
        if len(chosen) == n:
            break
        candidate = space.suggest(RandomChooser(rng))
        chosen.setdefault(candidate.key, candidate)
    return list(chosen.values())


def standalone(candidates: list[Candidate], epochs: int, seed: int, progress: Progress) -> list:
    """Each candidate trained by winnow (its own optimizer, schedule and quantization)."""
    results = []
    for i, candidate in enumerate(candidates, start=1):
        spec = TrialSpec(candidate, DATASET, "train", epochs, None, seed)
        result = evaluate(spec)
        if result.status is not Status.OK:
            raise RuntimeError(f"standalone training of {candidate.describe()}: {result.error}")
        results.append(result.metrics)
        progress(f"standalone seed {seed} {i}/{len(candidates)}: {result.metrics['accuracy']:.3f}")
    return results


def seed_mean(runs: list[list[dict[str, float]]]) -> list[float]:
    """Each candidate's standalone accuracy averaged over the seeds' runs (the ground truth)."""
    return [statistics.fmean(run[i]["accuracy"] for run in runs) for i in range(len(runs[0]))]


def standalone_seed(seed: int, k: int) -> int:
    """The seed of standalone run ``k``: from a stream apart from the supernet's ``seed`` (with
    the same seed, ``torch.manual_seed`` in ``train_supernet`` and standalone run 0 would draw
    bit-identical first-layer weights)."""
    return seed * 1000 + 1 + k


def _accuracies(run: list[dict[str, float]]) -> list[float]:
    return [m["accuracy"] for m in run]


def _finite_mean(taus: list[float]) -> tuple[float | None, int]:
    """The mean of the defined taus (None if none is) and how many were undefined: tau is NaN
    when one side's accuracies are all equal, and NaN is not JSON."""
    defined = [t for t in taus if math.isfinite(t)]
    return (statistics.fmean(defined) if defined else None), len(taus) - len(defined)


def seed_pair_kendall(runs: list[list[dict[str, float]]]) -> tuple[float | None, int]:
    """The mean Kendall tau between two seeds' standalone accuracies over every pair of seeds
    (how well one standalone run ranks another; None with one seed) and the undefined pairs."""
    pairs = itertools.combinations(runs, 2)
    return _finite_mean([ranks(_accuracies(a), _accuracies(b))[0] for a, b in pairs])


def leave_one_out_kendall(runs: list[list[dict[str, float]]]) -> tuple[float | None, int]:
    """The mean over seeds of one seed's tau against the mean of the other seeds (None with
    one seed) and the undefined ones."""
    if len(runs) < 2:
        return None, 0
    taus = [
        ranks(_accuracies(run), seed_mean(runs[:k] + runs[k + 1 :]))[0]
        for k, run in enumerate(runs)
    ]
    return _finite_mean(taus)


def supernet_steps(split: Dataset, epochs: int) -> int:
    """The supernet's schedule: ``epochs`` (the standalone runs' own) epochs of its split, each
    ``floor(len / BATCH_SIZE)`` steps (digits: 10 x floor(1078 / 64) = 160 steps).

    The truth is what ``epochs`` epochs of training reach, and there width dominates; a
    sandwich supernet trains its smallest subnet every step, so trained far longer (3000 steps,
    187.5 epochs) its narrow subnets reach what a short standalone run does not, and the ranking
    flattens. The rule was chosen in sample: steps were swept on the very 40 candidates (seed 0)
    the benchmark scores (3000 steps tau 0.44, 1000 0.49, 500 0.64, 300 0.70, 160 0.74, 85
    0.85); docs/architecture.md quotes it on fresh candidate sets (seeds 1 and 2). It is tied to
    the standalone epochs, not tuned below them: shorter ranked better still in sample, and
    that would fit the benchmark, not the method.
    """
    return epochs * steps_per_epoch(len(split.train_y), BATCH_SIZE)


def train_supernet(
    split: Dataset, steps: int, minutes: float | None, seed: int, **settings: Any
) -> tuple[MLPSupernet, float, int]:
    space = bench_space()
    torch.manual_seed(seed)
    shape = split.input_shape
    supernet = MLPSupernet(space.architecture, space.normalization, split.num_classes, shape)
    config = SandwichConfig(steps=steps, seed=seed, **settings)
    report = train(supernet, split, config, lambda rng: sample_policy(space, rng), minutes=minutes)
    return supernet, report.seconds, report.steps


def calibration_batches(split: Dataset, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return (x for x, _ in split.batches("train", 64, "cpu", generator))


FULL_PRECISION = {"quantization": FLOAT_POLICY}  # a candidate's update: its subnet unquantized


@torch.no_grad()
def inherited(
    supernet: MLPSupernet, candidates: list[Candidate], split: Dataset, seed: int
) -> dict[str, Any]:
    """Each candidate's validation accuracy with inherited weights: with re-estimated
    statistics and ranges, and without; its validation loss and its accuracy at full
    precision (both re-estimated); and the extraction's worst difference."""
    supernet.eval()
    x = split.normalize(split.test_x[:256])
    out: dict[str, list[float]] = {"accuracy": [], "no_recalibration": [], "loss": [], "float": []}
    worst = 0.0
    for candidate in candidates:
        subnet = supernet.get_active_subnet(candidate)
        reference = supernet(x, candidate.architecture, candidate.quantization)
        worst = max(worst, (subnet(x) - reference).abs().max().item())
        out["no_recalibration"].append(test_accuracy(subnet, split, torch.device("cpu")))
        recalibrate(subnet, calibration_batches(split, seed), RECALIBRATION_BATCHES)
        out["accuracy"].append(test_accuracy(subnet, split, torch.device("cpu")))
        out["loss"].append(validation_loss(subnet, split))
        floating = supernet.get_active_subnet(candidate.model_copy(update=FULL_PRECISION))
        recalibrate(floating, calibration_batches(split, seed), RECALIBRATION_BATCHES)
        out["float"].append(test_accuracy(floating, split, torch.device("cpu")))
    return {**out, "max_abs_diff": worst}


def validation_loss(model: torch.nn.Module, split: Dataset) -> float:
    """Mean cross-entropy on the validation split: a score without accuracy's ties."""
    logits = model.eval()(split.normalize(split.test_x))
    return torch.nn.functional.cross_entropy(logits, split.test_y).item()


def ranks(predicted: list[float], truth: list[float]) -> tuple[float, float]:
    """(Kendall tau-b, Spearman rho), scipy's (ties counted as scipy does)."""
    return float(kendalltau(predicted, truth).statistic), float(spearmanr(predicted, truth)[0])


def _ranks_dict(predicted: list[float], truth: list[float]) -> dict[str, float]:
    kendall, spearman = ranks(predicted, truth)
    return {"kendall": kendall, "spearman": spearman}


def _rank_average(a: list[float], b: list[float]) -> list[float]:
    """Equal-weight rank average (no fitting: as the published one-shot + params figure)."""
    return list(rankdata(a) + rankdata(b))


def _summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run(
    candidates: int = 40,
    seed: int = 0,
    minutes: float | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    ablation: bool = True,
    progress: Progress | None = None,
    standalone_seeds: int | None = None,
) -> dict[str, Any]:
    """The benchmark; ``minutes`` bounds each supernet's training (``steps`` its schedule);
    the ground truth is each candidate's standalone accuracy averaged over ``standalone_seeds``
    seeds (``standalone_seed(seed, k)``; None: ``STANDALONE_SEEDS``)."""
    torch.set_num_threads(1)
    epochs = epochs or EPOCHS
    standalone_seeds = STANDALONE_SEEDS if standalone_seeds is None else standalone_seeds
    if standalone_seeds < 1:
        raise ValueError(f"standalone_seeds must be at least 1, got {standalone_seeds}")
    say = progress or (lambda line: None)
    chosen = distinct_candidates(bench_space(), candidates, seed)
    split = carve_validation(load_dataset(DATASET), VALIDATION_FRACTION, seed)
    steps = steps or supernet_steps(split, epochs)

    start = time.perf_counter()
    seeds = [standalone_seed(seed, k) for k in range(standalone_seeds)]
    runs = [standalone(chosen, epochs, s, say) for s in seeds]
    standalone_seconds = time.perf_counter() - start
    truth_metrics, truth = runs[0], seed_mean(runs)
    single = [m["accuracy"] for m in truth_metrics]

    supernet, train_seconds, done = train_supernet(split, steps, minutes, seed)
    say(f"supernet: {done} steps in {train_seconds:.1f} s")
    scored = inherited(supernet, chosen, split, seed)
    kendall, spearman = ranks(scored["accuracy"], truth)
    pair, pairs_undefined = seed_pair_kendall(runs)
    leave_one_out, leave_one_out_undefined = leave_one_out_kendall(runs)
    report: dict[str, Any] = {
        "candidates": len(chosen),
        "dataset": DATASET,
        "seed": seed,
        "space": SPACE,
        "standalone_epochs": epochs,
        "standalone_seeds": standalone_seeds,
        "standalone_run_seeds": seeds,
        "standalone_seed_pair_kendall": pair,
        "standalone_seed_pairs_undefined": pairs_undefined,
        "standalone_leave_one_out_kendall": leave_one_out,
        "standalone_leave_one_out_undefined": leave_one_out_undefined,
        "standalone_seconds": round(standalone_seconds, 1),
        "supernet_steps": done,
        "train_seconds": round(train_seconds, 1),
        "validation_examples": len(split.test_y),
        "kendall": kendall,
        "spearman": spearman,
        "criterion": {"kendall_at_least": CRITERION, "met": kendall >= CRITERION},
        "kendall_single_seed": ranks(scored["accuracy"], single)[0],
        "kendall_no_recalibration": ranks(scored["no_recalibration"], truth)[0],
        # lower loss ranks higher; full precision: the subnet scored without its policy
        "kendall_inherited_loss": ranks([-v for v in scored["loss"]], truth)[0],
        "kendall_inherited_full_precision": ranks(scored["float"], truth)[0],
        "baselines": _baselines(truth_metrics, truth),
        "baselines_single_seed": _baselines(truth_metrics, single),
        "combined": {
            f"inherited+{name}": _ranks_dict(
                _rank_average(scored["accuracy"], [m[name] for m in truth_metrics]), truth
            )
            for name in ("params", "model_bytes")
        },
        "extraction_max_abs_diff": scored["max_abs_diff"],
        "standalone_accuracy": _summary(truth),
        "inherited_accuracy": _summary(scored["accuracy"]),
    }
    if ablation:
        report.update(_ablations(chosen, split, truth, steps, minutes, seed, say))
    return report


def _baselines(metrics: list[dict[str, float]], truth: list[float]) -> dict[str, Any]:
    """The costs a search knows for free (the same for every seed), ranked against ``truth``."""
    names = ("params", "model_bytes", "bitops")
    return {name: _ranks_dict([m[name] for m in metrics], truth) for name in names}


ABLATIONS = {
    "no_quantization_sampling": {"sample_quantization": False},
    "no_distillation": {"distill": False},
    "no_weight_regularization": {"weight_regularization": 0.0},
}


def _ablations(chosen, split, truth, steps, minutes, seed, say) -> dict[str, Any]:
    """Each ablation's tau and rho against the same ground truth."""
    out: dict[str, Any] = {}
    for name, settings in ABLATIONS.items():
        supernet, _, _ = train_supernet(split, steps, minutes, seed, **settings)
        tau, rho = ranks(inherited(supernet, chosen, split, seed)["accuracy"], truth)
        out[f"kendall_{name}"], out[f"spearman_{name}"] = tau, rho
        say(f"ablation {name}: kendall {tau:.3f}")
    return out
