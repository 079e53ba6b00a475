import numpy as np
import pytest
import torch
from torch import nn

from dqn_cli.buffers.replay import Batch
from dqn_cli.learner import DQNLearner, td_targets


class TableQ(nn.Module):
    """Q(s, .) looked up from a table by the integer state in obs[:, 0]."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, obs):
        return self.table[obs[:, 0].long()]


def test_truncation_bootstraps_and_termination_does_not():
    target = TableQ([[0.0, 0.0], [3.0, 5.0]])
    rewards = torch.tensor([1.0, 1.0])
    next_obs = torch.tensor([[1.0], [1.0]])
    # Both transitions ended an episode; only the first was a true terminal state. The second
    # was cut by a time limit (truncated) and is stored with terminated = 0.
    terminated = torch.tensor([1.0, 0.0])
    y = td_targets(rewards, next_obs, terminated, 0.9, target)
    assert y.tolist() == pytest.approx([1.0, 1.0 + 0.9 * 5.0])


def test_double_dqn_picks_with_online_and_values_with_target():
    online = TableQ([[0.0, 0.0], [10.0, 0.0]])  # online prefers action 0 in state 1
    target = TableQ([[0.0, 0.0], [2.0, 7.0]])  # target prefers action 1 (value 7)
    args = (torch.tensor([0.0]), torch.tensor([[1.0]]), torch.tensor([0.0]), 1.0, target)
    assert td_targets(*args).item() == pytest.approx(7.0)  # DQN: max over target
    assert td_targets(*args, online_net=online).item() == pytest.approx(2.0)  # DDQN


def _batch(weights):
    return Batch(
        obs=torch.tensor([[0.0], [0.0]]),
        actions=torch.tensor([0, 1]),
        rewards=torch.tensor([1.0, 3.0]),
        next_obs=torch.tensor([[1.0], [1.0]]),
        terminated=torch.tensor([1.0, 1.0]),
        weights=torch.tensor(weights),
        slots=np.array([0, 1]),
    )


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_importance_weights_multiply_the_per_sample_loss(loss):
    def run(weights):
        net = TableQ([[0.0, 0.0], [0.0, 0.0]])
        learner = DQNLearner(
            net, net, torch.optim.SGD(net.parameters(), lr=0.1), 0.9, False, loss, None
        )
        result = learner.update(_batch(weights))
        return result, net.table.detach().clone()

    result, _ = run([1.0, 1.0])
    assert result.td_errors.tolist() == pytest.approx([1.0, 3.0])
    expected = {"mse": (1 + 9) / 2, "huber": (0.5 + 2.5) / 2}[loss]
    assert result.loss.item() == pytest.approx(expected)
    weighted, table = run([1.0, 0.0])
    assert weighted.loss.item() == pytest.approx({"mse": 0.5, "huber": 0.25}[loss])
    assert table[0, 1].item() == 0.0  # a zero-weight sample contributes no gradient
    assert table[0, 0].item() > 0.0
