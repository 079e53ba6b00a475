import numpy as np
import pytest
import torch

from bench.update_cost import autograd_copy, autograd_update, random_batch
from dqn_cli.buffers.replay import Batch
from dqn_cli.learner import DQNLearner, td_targets
from dqn_cli.networks import EnvSpec, QNetwork
from dqn_cli.optim import Adam


def table_q(table):
    """A QNetwork without hidden layers on one-hot states: Q(s, .) is row s of ``table``."""
    table = torch.tensor(table, dtype=torch.float32)
    net = QNetwork(EnvSpec((), "int64", table.shape[1], obs_categories=table.shape[0]), ())
    net.linears[0].weight.copy_(table.T)
    net.linears[0].bias.zero_()
    return net


def test_truncation_bootstraps_and_termination_does_not():
    target = table_q([[0.0, 0.0], [3.0, 5.0]])
    rewards = torch.tensor([1.0, 1.0])
    next_obs = torch.tensor([1, 1])
    # Both transitions ended an episode; only the first was a true terminal state. The second
    # was cut by a time limit (truncated) and is stored with terminated = 0.
    terminated = torch.tensor([1.0, 0.0])
    y = td_targets(rewards, next_obs, terminated, 0.9, target)
    assert y.tolist() == pytest.approx([1.0, 1.0 + 0.9 * 5.0])


def test_double_dqn_picks_with_online_and_values_with_target():
    online = table_q([[0.0, 0.0], [10.0, 0.0]])  # online prefers action 0 in state 1
    target = table_q([[0.0, 0.0], [2.0, 7.0]])  # target prefers action 1 (value 7)
    args = (torch.tensor([0.0]), torch.tensor([1]), torch.tensor([0.0]), 1.0, target)
    assert td_targets(*args).item() == pytest.approx(7.0)  # DQN: max over target
    assert td_targets(*args, online_net=online).item() == pytest.approx(2.0)  # DDQN


def _batch(weights):
    return Batch(
        obs=torch.tensor([0, 0]),
        actions=torch.tensor([0, 1]),
        rewards=torch.tensor([1.0, 3.0]),
        next_obs=torch.tensor([1, 1]),
        terminated=torch.tensor([1.0, 1.0]),
        weights=torch.tensor(weights),
        slots=np.array([0, 1]),
    )


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_importance_weights_multiply_the_per_sample_loss(loss):
    def run(weights):
        net = table_q([[0.0, 0.0], [0.0, 0.0]])
        learner = DQNLearner(net, net, Adam(list(net.parameters()), lr=0.1), 0.9, False, loss, None)
        result = learner.update(_batch(weights))
        return result, net.linears[0].weight.T.clone()

    result, _ = run([1.0, 1.0])
    assert result.td_errors.tolist() == pytest.approx([1.0, 3.0])
    expected = {"mse": (1 + 9) / 2, "huber": (0.5 + 2.5) / 2}[loss]
    assert result.loss.item() == pytest.approx(expected)
    weighted, table = run([1.0, 0.0])
    assert weighted.loss.item() == pytest.approx({"mse": 0.5, "huber": 0.25}[loss])
    assert table[0, 1].item() == 0.0  # a zero-weight sample contributes no gradient
    assert table[0, 0].item() > 0.0


@pytest.mark.parametrize(
    ("double_q", "loss", "max_grad_norm", "separate_target"),
    [
        (False, "mse", None, True),
        (True, "huber", 0.05, True),  # 0.05 clips: the raw norm is larger
        (False, "huber", 10.0, False),  # target=none: targets from the online net
        (True, "mse", None, True),
    ],
)
def test_update_equals_autograd_with_torch_adam(double_q, loss, max_grad_norm, separate_target):
    torch.manual_seed(0)
    spec = EnvSpec((4,), "float32", 3)
    online = QNetwork(spec, (32, 16))
    target = QNetwork(spec, (32, 16)) if separate_target else online
    optimizer = Adam(list(online.parameters()), lr=0.01, eps=0.1)
    learner = DQNLearner(online, target, optimizer, 0.9, double_q, loss, max_grad_norm)

    ref_online = autograd_copy(online)
    ref_target = autograd_copy(target) if separate_target else ref_online
    ref_optimizer = torch.optim.Adam(ref_online.parameters(), lr=0.01, eps=0.1)

    for step in range(6):
        if step == 3:  # a schedule changing the learning rate between steps
            optimizer.lr = ref_optimizer.param_groups[0]["lr"] = 0.003
        batch = random_batch(16, 4, 3, seed=step)
        learner.update(batch)
        autograd_update(
            ref_online, ref_target, ref_optimizer, batch, 0.9, double_q, loss, max_grad_norm
        )
        for ours, reference in zip(online.parameters(), ref_online.parameters(), strict=True):
            torch.testing.assert_close(ours, reference.detach(), rtol=1e-5, atol=1e-6)


def test_adam_state_round_trips_and_refuses_a_foreign_state():
    torch.manual_seed(0)
    params = [torch.randn(3, 2), torch.randn(2)]
    optimizer = Adam(params, lr=0.1)
    for grad in optimizer.grads:
        grad.normal_()
    optimizer.step()
    optimizer.step()
    state = optimizer.state_dict()

    fresh = Adam([p.clone() for p in params], lr=0.5)
    fresh.load_state_dict(state)
    assert fresh.step_count == 2 and fresh.lr == 0.1
    torch.testing.assert_close(fresh.exp_avg_sq, optimizer.exp_avg_sq)

    torch_state = torch.optim.Adam([torch.zeros(3, 2, requires_grad=True)]).state_dict()
    with pytest.raises(ValueError, match="not dqn-cli's Adam state"):
        fresh.load_state_dict(torch_state)
    with pytest.raises(ValueError, match="parameter shapes"):
        Adam([torch.zeros(4)], lr=0.1).load_state_dict(state)
