"""BatchNorm re-estimation: the statistics become the batches' own, the weights stay."""

import torch
from torch import nn

from winnow.supernet.batchnorm import recalibrate_batchnorm


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())


def test_statistics_are_the_cumulative_average_of_the_batches_used():
    model = _model()
    batches = [torch.randn(8, 3, 8, 8) * 3 + 2 for _ in range(4)]
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    weights = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith(statistics)}

    used = recalibrate_batchnorm(model, iter(batches), num_batches=2)

    with torch.no_grad():
        features = torch.cat([model[0](x) for x in batches[:2]])
    norm = model[1]
    assert used == 2 and not model.training and norm.momentum == 0.1
    torch.testing.assert_close(norm.running_mean, features.mean((0, 2, 3)))
    # equal batch sizes: the mean of per-batch unbiased variances
    variance = torch.stack([model[0](x).detach().var((0, 2, 3)) for x in batches[:2]]).mean(0)
    torch.testing.assert_close(norm.running_var, variance)
    for key, value in weights.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_fewer_batches_than_asked_uses_what_there_is():
    model = _model()
    assert recalibrate_batchnorm(model, [torch.randn(4, 3, 8, 8)], num_batches=8) == 1
    assert int(model[1].num_batches_tracked) == 1
