"""Tests of the optimizer axis.

Every registered optimizer is checked against a reference written here from its paper's update
rule (plain torch arithmetic on float64, no optimizer library), on a 5-element tensor with
gradients given by hand for two steps and non-default hyperparameters, weight decay included.
Sophia is checked twice: with Hessian-diagonal estimates injected through ``step(hessian=...)``,
and through ``backward_and_step`` on a quadratic loss whose Hessian diagonal is known, where the
Hutchinson estimate must be ``z * (H z)`` for the Gaussian ``z`` the optimizer drew.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from winnow.search_space.optimizers import (
    HYPERPARAMETERS,
    OPTIMIZERS,
    backward_and_step,
    build_optimizer,
)
from winnow.search_space.registry import UnknownNameError

F64 = torch.float64
THETA0 = torch.tensor([0.5, -1.2, 0.3, 2.0, -0.7], dtype=F64)
# Coordinate 0 and 1 change sign between the steps (Lion's sign, diffGrad's friction).
GRADS = (
    torch.tensor([0.1, -0.4, 0.25, 1.5, -0.05], dtype=F64),
    torch.tensor([-0.3, 0.2, 0.6, 0.9, -0.02], dtype=F64),
)
# Hessian-diagonal estimates for Sophia: a negative entry, a zero, entries large enough that the
# preconditioned step is not clipped (rho * h > |m|) and small ones where it is.
HESSIANS = (
    torch.tensor([-3.0, 0.0, 400.0, 2.0e3, 50.0], dtype=F64),
    torch.tensor([-1.0, 5.0, 900.0, 3.0e3, 20.0], dtype=F64),
)

ADAM_HP = {"lr": 0.02, "weight_decay": 0.1, "beta1": 0.8, "beta2": 0.95}
TEST_HP = {
    "sgd": {"lr": 0.05, "weight_decay": 0.1, "momentum": 0.7, "nesterov": True},
    "adam": ADAM_HP,
    "adamw": ADAM_HP,
    "lion": ADAM_HP,
    "adabelief": ADAM_HP,
    "adamp": ADAM_HP,
    "lamb": ADAM_HP,
    "sophia": {**ADAM_HP, "rho": 0.05},
    "diffgrad": ADAM_HP,
}


# --- references: the papers' update rules -------------------------------------------------------


def bias_corrected(x: torch.Tensor, beta: float, t: int) -> torch.Tensor:
    return x / (1 - beta**t)


def ref_sgd(theta, grads, hp):
    """Nesterov momentum (Sutskever et al. 2013, in Bengio et al.'s form) with L2 decay."""
    buf = torch.zeros_like(theta)
    for g in grads:
        g = g + hp["weight_decay"] * theta
        buf = hp["momentum"] * buf + g
        theta = theta - hp["lr"] * (g + hp["momentum"] * buf)
    return theta


def ref_adam(theta, grads, hp, eps=1e-8):
    """Kingma & Ba 2015, Algorithm 1, with L2 decay added to the gradient."""
    b1, b2 = hp["beta1"], hp["beta2"]
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        g = g + hp["weight_decay"] * theta
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        theta = theta - hp["lr"] * bias_corrected(m, b1, t) / (
            bias_corrected(v, b2, t).sqrt() + eps
        )
    return theta


def ref_adamw(theta, grads, hp, eps=1e-8):
    """Loshchilov & Hutter 2019, Algorithm 2 (decay lr * weight_decay, torch's units)."""
    b1, b2 = hp["beta1"], hp["beta2"]
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        adam = bias_corrected(m, b1, t) / (bias_corrected(v, b2, t).sqrt() + eps)
        theta = theta - hp["lr"] * (adam + hp["weight_decay"] * theta)
    return theta


def ref_lion(theta, grads, hp):
    """Chen et al. 2023, Program 1."""
    b1, b2 = hp["beta1"], hp["beta2"]
    m = torch.zeros_like(theta)
    for g in grads:
        update = torch.sign(b1 * m + (1 - b1) * g)
        theta = theta - hp["lr"] * (update + hp["weight_decay"] * theta)
        m = b2 * m + (1 - b2) * g
    return theta


def ref_adabelief(theta, grads, hp, eps=1e-16):
    """Zhuang et al. 2020, Algorithm 2, with decoupled decay."""
    b1, b2 = hp["beta1"], hp["beta2"]
    m, s = torch.zeros_like(theta), torch.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2 + eps
        step = bias_corrected(m, b1, t) / (bias_corrected(s, b2, t).sqrt() + eps)
        theta = theta - hp["lr"] * (step + hp["weight_decay"] * theta)
    return theta


def project_if_scale_invariant(theta, grad, update, delta=0.1, eps=1e-8):
    """AdamP's projection (Heo et al. 2021, Algorithm 2 lines 5-8), per row then whole tensor.

    Returns the update and whether it was projected."""
    if theta.dim() < 2:
        return update, False
    for rows in (theta.shape[0], 1):  # channel view, then layer view
        w, g, u = (x.reshape(rows, -1) for x in (theta, grad, update))
        cosine = (w * g).sum(1).abs() / (w.norm(dim=1) * g.norm(dim=1))
        if cosine.max() < delta / math.sqrt(w.shape[1]):
            unit = w / w.norm(dim=1, keepdim=True)
            u = u - unit * (unit * u).sum(1, keepdim=True)
            return u.reshape(update.shape), True
    return update, False


def ref_adamp(theta, grads, hp, eps=1e-8, wd_ratio=0.1):
    """Heo et al. 2021, Algorithm 2: p = m / (sqrt(v) + eps), projected on scale-invariant
    weights, with Adam's bias correction folded in the step size (Kingma & Ba 2015, Sec. 2, as
    in the authors' code) and decoupled decay times wd_ratio when projected."""
    b1, b2 = hp["beta1"], hp["beta2"]
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    projected = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        update, was_projected = project_if_scale_invariant(theta, g, m / (v.sqrt() + eps))
        projected.append(was_projected)
        decay = hp["weight_decay"] * (wd_ratio if was_projected else 1.0)
        step_size = hp["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t)
        theta = theta - hp["lr"] * decay * theta - step_size * update
    return theta, projected


def ref_lamb(theta, grads, hp, eps=1e-6):
    """You et al. 2020, Algorithm 2, phi = identity, trust ratio 1 when a norm is 0."""
    b1, b2 = hp["beta1"], hp["beta2"]
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        r = bias_corrected(m, b1, t) / (bias_corrected(v, b2, t).sqrt() + eps)
        u = r + hp["weight_decay"] * theta
        w_norm, u_norm = float(theta.norm()), float(u.norm())
        ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        theta = theta - hp["lr"] * ratio * u
    return theta


def ref_sophia(theta, grads, hessians, hp, eps=1e-12):
    """Liu et al. 2023 (ICLR 2024), Algorithm 3. ``hessians[t]`` None: no refresh at step t."""
    b1, b2 = hp["beta1"], hp["beta2"]
    m, h = torch.zeros_like(theta), torch.zeros_like(theta)
    clipped = []
    for g, h_hat in zip(grads, hessians, strict=True):
        m = b1 * m + (1 - b1) * g
        if h_hat is not None:
            h = b2 * h + (1 - b2) * h_hat
        theta = theta - hp["lr"] * hp["weight_decay"] * theta
        ratio = m / torch.clamp(hp["rho"] * h, min=eps)
        clipped.append(ratio.abs() > 1)
        theta = theta - hp["lr"] * ratio.clamp(-1, 1)
    return theta, clipped


def ref_diffgrad(theta, grads, hp, eps=1e-8):
    """Dubey et al. 2019, with L2 decay in the gradient and Adam's bias correction in the step
    size (Kingma & Ba 2015, Sec. 2), both as in the authors' code."""
    b1, b2 = hp["beta1"], hp["beta2"]
    m, v, previous = torch.zeros_like(theta), torch.zeros_like(theta), torch.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        g = g + hp["weight_decay"] * theta
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        friction = 1 / (1 + torch.exp(-(previous - g).abs()))
        step_size = hp["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t)
        theta = theta - step_size * friction * m / (v.sqrt() + eps)
        previous = g
    return theta


# Each maps (theta0, grads, hyperparameters) to theta after the steps.
REFERENCES = {
    "sgd": ref_sgd,
    "adam": ref_adam,
    "adamw": ref_adamw,
    "lion": ref_lion,
    "adabelief": ref_adabelief,
    "adamp": lambda theta, grads, hp: ref_adamp(theta, grads, hp)[0],
    "lamb": ref_lamb,
    "sophia": lambda theta, grads, hp: ref_sophia(theta, grads, HESSIANS, hp)[0],
    "diffgrad": ref_diffgrad,
}


def registry_steps(name, theta0, grads, hp, hessians=None):
    """Steps of the registry's optimizer with the given gradients (and Sophia's Hessians)."""
    p = torch.nn.Parameter(theta0.clone())
    optimizer = build_optimizer(name, [p], hp)
    for i, g in enumerate(grads):
        p.grad = g.clone()
        if hessians is None:
            optimizer.step()
        else:
            optimizer.step(hessian=[hessians[i].clone()])
    return p.detach()


# --- update rules against the papers ------------------------------------------------------------


def test_every_optimizer_has_a_reference():
    assert sorted(OPTIMIZERS.names()) == sorted(REFERENCES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_two_steps_match_the_paper(name):
    hp = TEST_HP[name]
    hessians = HESSIANS if name == "sophia" else None
    got = registry_steps(name, THETA0, GRADS, hp, hessians)
    expected = REFERENCES[name](THETA0, GRADS, hp)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-13)
    assert not torch.allclose(got, THETA0)


def test_sophia_test_exercises_clipped_and_unclipped_coordinates():
    _, clipped = ref_sophia(THETA0, GRADS, HESSIANS, TEST_HP["sophia"])
    for step in clipped:
        assert step.any() and not step.all()


def test_adamp_projects_updates_of_scale_invariant_weights():
    theta = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 2.0]], dtype=F64)
    # Each gradient row is orthogonal to its weight row (a scale-invariant weight's gradient is).
    grads = (
        torch.tensor([[2.0, -1.0, 0.0], [4.0, 1.0, -1.0]], dtype=F64),
        torch.tensor([[1.0, 0.0, 1.0], [-2.0, 3.0, 0.5]], dtype=F64),
    )
    expected, projected = ref_adamp(theta, grads, ADAM_HP)
    assert projected == [True, True]
    got = registry_steps("adamp", theta, grads, ADAM_HP)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-13)
    # Projection changes the result: the unprojected Adam-with-decay step lands elsewhere.
    unprojected = ref_adamp(theta.flatten(), [g.flatten() for g in grads], ADAM_HP)[0]
    assert not torch.allclose(got.flatten(), unprojected)


def test_lamb_trust_ratio_is_one_for_zero_weights():
    zeros = torch.zeros(5, dtype=F64)
    hp = {**ADAM_HP, "weight_decay": 0.0}
    got = registry_steps("lamb", zeros, GRADS[:1], hp)
    # Step 1 with zero weights: r = g / (|g| + eps), applied at full lr.
    torch.testing.assert_close(got, -hp["lr"] * GRADS[0] / (GRADS[0].abs() + 1e-6))


def quadratic_loss(theta: torch.Tensor, curvature: torch.Tensor) -> torch.Tensor:
    return 0.5 * (curvature * theta**2).sum()


def test_sophia_hutchinson_estimate_on_a_quadratic():
    """L = sum(a * theta^2) / 2 has Hessian diag(a), so Hutchinson's estimate with the
    optimizer's Gaussian draw z is a * z^2; the next step (no refresh, k = 10) reuses it."""
    curvature = torch.tensor([1.0, 4.0, 0.5, 10.0, 2.0], dtype=F64)
    hp = TEST_HP["sophia"]
    p = torch.nn.Parameter(THETA0.clone())
    optimizer = build_optimizer("sophia", [p], hp)
    torch.manual_seed(1234)
    backward_and_step(optimizer, quadratic_loss(p, curvature))
    theta1 = p.detach().clone()
    backward_and_step(optimizer, quadratic_loss(p, curvature))

    torch.manual_seed(1234)
    z = torch.randn(5, dtype=F64)
    h_hat = curvature * z * z
    torch.testing.assert_close(optimizer.state[p]["hessian"], h_hat)
    expected, _ = ref_sophia(THETA0, [curvature * THETA0], [h_hat], hp)
    torch.testing.assert_close(theta1, expected, rtol=1e-10, atol=1e-13)
    # The second step continues from the first's state: both steps in one reference run.
    grads = [curvature * THETA0, curvature * theta1]
    expected, _ = ref_sophia(THETA0, grads, [h_hat, None], hp)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-13)


# --- training, errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_lowers_a_linear_regression_loss(name):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=gen)
    y = x @ torch.tensor([[1.5], [-2.0], [0.7]]) + 0.5
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = build_optimizer(name, model.parameters(), {})

    def loss() -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(x), y)

    before = loss().item()
    for _ in range(25):
        backward_and_step(optimizer, loss())
    assert loss().item() < before


def test_unknown_optimizer_lists_the_registered_ones():
    with pytest.raises(UnknownNameError) as excinfo:
        build_optimizer("adagrad", [torch.nn.Parameter(torch.zeros(2))], {})
    for name in OPTIMIZERS.names():
        assert name in str(excinfo.value)


def test_unknown_hyperparameter_names_optimizer_and_allowed_ones():
    with pytest.raises(ValueError) as excinfo:
        build_optimizer("sgd", [torch.nn.Parameter(torch.zeros(2))], {"beta1": 0.9})
    message = str(excinfo.value)
    for word in ("'sgd'", "'beta1'", "lr", "weight_decay", "momentum", "nesterov"):
        assert word in message


def test_sophia_rejects_non_positive_rho():
    with pytest.raises(ValueError, match="rho"):
        build_optimizer("sophia", [torch.nn.Parameter(torch.zeros(2))], {"rho": 0.0})


def test_partial_hyperparameters_take_defaults():
    optimizer = build_optimizer("adamw", [torch.nn.Parameter(torch.zeros(2))], {"lr": 0.5})
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.5
    assert group["betas"] == (0.9, 0.999)
    assert group["weight_decay"] == OPTIMIZERS.get("adamw").defaults["weight_decay"]


def test_hyperparameters_are_the_union_of_the_entries():
    union = {key for name in OPTIMIZERS for key in OPTIMIZERS.get(name).defaults}
    assert set(HYPERPARAMETERS) == union
    assert len(HYPERPARAMETERS) == len(union)
    assert {"lr", "weight_decay", "momentum", "nesterov", "beta1", "beta2", "rho"} == union
    assert [n for n in OPTIMIZERS if OPTIMIZERS.get(n).needs_hessian] == ["sophia"]


def test_backward_builds_the_graph_for_entries_that_need_a_hessian():
    """``needs_hessian`` is what ``backward_and_step`` reads: Sophia-H's own factory under an
    entry that does not declare it gets no graph, and its Hessian-vector product fails."""
    sophia = OPTIMIZERS.get("sophia")
    p = torch.nn.Parameter(THETA0.clone())
    assert build_optimizer("sophia", [p], {}).winnow_needs_hessian
    assert not build_optimizer("adam", [p], {}).winnow_needs_hessian
    blind = dataclasses.replace(sophia, name="blind_sophia", needs_hessian=False)
    with OPTIMIZERS.registered("blind_sophia", blind):
        optimizer = build_optimizer("blind_sophia", [p], {})
    with pytest.raises(RuntimeError, match="does not require grad"):
        backward_and_step(optimizer, quadratic_loss(p, torch.ones(5, dtype=F64)))


def test_sgd_without_momentum_ignores_nesterov():
    """Nesterov's look-ahead needs momentum; with none, the flag must not break the build."""
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = build_optimizer(
        "sgd", [theta], {"lr": 0.5, "momentum": 0.0, "nesterov": True, "weight_decay": 0.0}
    )
    theta.grad = torch.tensor([0.2, 0.4])
    opt.step()
    torch.testing.assert_close(theta.detach(), torch.tensor([0.9, -2.2]))
