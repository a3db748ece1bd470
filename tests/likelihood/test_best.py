"""likelihood.best.BestState: what the three training loops keep."""

from __future__ import annotations

import math

import torch
from torch import nn

from likelihood.best import BestState


def test_keeps_the_lowest_finite_score_and_restores_its_state():
    net = nn.Linear(2, 1)
    best = BestState()
    with torch.no_grad():
        net.weight.fill_(1.0)
    assert best.offer(0.5, net)
    with torch.no_grad():
        net.weight.fill_(2.0)  # the kept copy does not follow the network
    assert not best.offer(0.7, net)
    assert not best.offer(math.nan, net) and not best.offer(-math.inf, net)
    assert not best.offer(0.5 - 1e-9, net, margin=1e-6)
    assert best.value == 0.5
    best.restore(net)
    assert torch.equal(net.weight, torch.ones(1, 2))


def test_restore_without_a_kept_state_leaves_the_network():
    net = nn.Linear(2, 1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    BestState().restore(net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
