import numpy as np
import pytest
import torch

import dqn_cli.fast_learner as fast_learner
from dqn_cli.buffers.replay import Batch
from dqn_cli.config import ConfigError
from dqn_cli.env_spec import EnvSpec
from dqn_cli.fast_learner import ExplicitGradientLearner
from dqn_cli.learner import AutogradLearner, TDLoss, make_learner, td_targets
from dqn_cli.networks import build_q_network
from dqn_cli.optim import Adam

MLP = "dqn_cli.networks.MLP"


def mlp(spec, hidden, head="linear", seed=0):
    torch.manual_seed(seed)
    return build_q_network(MLP, head, {"hidden": list(hidden)}, spec)


def table_q(table):
    """A Q-network without hidden layers on one-hot states: Q(s, .) is row s of ``table``."""
    table = torch.tensor(table, dtype=torch.float32)
    spec = EnvSpec((), "int64", table.shape[1], obs_categories=table.shape[0])
    net = mlp(spec, ())
    linear = net.net.linears[0]
    with torch.no_grad():
        linear.weight.copy_(table.T)
        linear.bias.zero_()
    return net


def random_batch(batch_size, obs_dim, n_actions, seed, n_step=False):
    """Random transitions, ~30% terminal, importance weights in [0, 1) as PER gives them;
    with ``n_step`` the discounts vary per transition as n-step returns make them."""
    g = torch.Generator().manual_seed(seed)
    discounts = 0.9 ** torch.randint(1, 4, (batch_size,), generator=g).float() if n_step else None
    return Batch(
        obs=torch.randn(batch_size, obs_dim, generator=g),
        actions=torch.randint(0, n_actions, (batch_size,), generator=g),
        rewards=torch.randn(batch_size, generator=g),
        next_obs=torch.randn(batch_size, obs_dim, generator=g),
        terminated=(torch.rand(batch_size, generator=g) < 0.3).float(),
        discounts=discounts if discounts is not None else torch.full((batch_size,), 0.9),
        weights=torch.rand(batch_size, generator=g),
        slots=np.arange(batch_size),
    )


def test_truncation_bootstraps_and_termination_does_not():
    target = table_q([[0.0, 0.0], [3.0, 5.0]])
    rewards = torch.tensor([1.0, 1.0])
    next_obs = torch.tensor([1, 1])
    # Both transitions ended an episode; only the first was a true terminal state. The second
    # was cut by a time limit (truncated) and is stored with terminated = 0.
    terminated = torch.tensor([1.0, 0.0])
    y = td_targets(rewards, next_obs, terminated, 0.9, target)
    assert y.tolist() == pytest.approx([1.0, 1.0 + 0.9 * 5.0])


def test_n_step_discount_is_per_transition():
    target = table_q([[0.0, 0.0], [3.0, 5.0]])
    y = td_targets(
        torch.tensor([2.0, 2.0]),
        torch.tensor([1, 1]),
        torch.zeros(2),
        torch.tensor([0.5, 0.25]),
        target,
    )
    assert y.tolist() == pytest.approx([2.0 + 0.5 * 5.0, 2.0 + 0.25 * 5.0])


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
        discounts=torch.tensor([0.9, 0.9]),
        weights=torch.tensor(weights),
        slots=np.array([0, 1]),
    )


@pytest.mark.parametrize("learner_class", [ExplicitGradientLearner, AutogradLearner])
@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_importance_weights_multiply_the_per_sample_loss(loss, learner_class):
    def run(weights):
        net = table_q([[0.0, 0.0], [0.0, 0.0]])
        learner = learner_class(net, net, TDLoss(False, loss, None), lr=0.1)
        result = learner.update(_batch(weights))
        return result, net.net.linears[0].weight.T.detach().clone()

    result, _ = run([1.0, 1.0])
    assert result.td_errors.tolist() == pytest.approx([1.0, 3.0])
    expected = {"mse": (1 + 9) / 2, "huber": (0.5 + 2.5) / 2}[loss]
    assert result.loss.item() == pytest.approx(expected)
    weighted, table = run([1.0, 0.0])
    assert weighted.loss.item() == pytest.approx({"mse": 0.5, "huber": 0.25}[loss])
    assert table[0, 1].item() == 0.0  # a zero-weight sample contributes no gradient
    assert table[0, 0].item() > 0.0


@pytest.mark.parametrize(
    ("double_q", "loss", "max_grad_norm", "separate_target", "n_step"),
    [
        (False, "mse", None, True, False),
        (True, "huber", 0.05, True, False),  # 0.05 clips: the raw norm is larger
        (False, "huber", 10.0, False, False),  # target=none: targets from the online net
        (True, "mse", None, True, True),  # n-step discounts
        (False, "huber", 1.0, True, True),
    ],
)
def test_fast_learner_equals_the_autograd_learner(
    double_q, loss, max_grad_norm, separate_target, n_step
):
    """Same weights after 40 updates with importance weights, a learning-rate change halfway."""
    spec = EnvSpec((4,), "float32", 3)
    learners = []
    for cls in (ExplicitGradientLearner, AutogradLearner):
        online = mlp(spec, (32, 16))
        target = mlp(spec, (32, 16), seed=1) if separate_target else online
        td = TDLoss(double_q, loss, max_grad_norm)
        learners.append(cls(online, target, td, lr=0.01, adam_eps=0.1))
    fast, reference = learners
    for step in range(40):
        if step == 20:  # a schedule changing the learning rate between steps
            fast.set_lr(0.003)
            reference.set_lr(0.003)
        batch = random_batch(16, 4, 3, seed=step, n_step=n_step)
        ours, theirs = fast.update(batch), reference.update(batch)
        torch.testing.assert_close(ours.td_errors, theirs.td_errors, rtol=1e-4, atol=1e-5)
    for a, b in zip(fast.online_net.parameters(), reference.online_net.parameters(), strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-5)


def test_optimizer_state_moves_between_learners():
    """A checkpoint written by one learner resumes with the other."""
    spec = EnvSpec((4,), "float32", 2)
    fast = ExplicitGradientLearner(
        mlp(spec, (8,)), mlp(spec, (8,), seed=1), TDLoss(False, "mse", None), lr=0.01
    )
    for step in range(3):
        fast.update(random_batch(8, 4, 2, seed=step))
    autograd = AutogradLearner(
        mlp(spec, (8,)), mlp(spec, (8,), seed=1), TDLoss(False, "mse", None), lr=0.5
    )
    autograd.online_net.load_state_dict(fast.online_net.state_dict())
    autograd.load_state_dict(fast.state_dict())
    state = autograd.state_dict()
    assert state["step"] == 3 and state["lr"] == 0.01
    torch.testing.assert_close(state["exp_avg_sq"], fast.state_dict()["exp_avg_sq"])
    batch = random_batch(8, 4, 2, seed=9)
    fast.update(batch)
    autograd.update(batch)
    for a, b in zip(fast.online_net.parameters(), autograd.online_net.parameters(), strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


def _make(kind, q_net, device="cpu"):
    return make_learner(
        kind,
        q_net,
        q_net,
        torch.device(device),
        TDLoss(False, "huber", 10.0),
        lr=1e-3,
        adam_eps=1e-8,
    )


def test_auto_picks_fast_for_a_plain_mlp_and_autograd_for_the_rest():
    spec = EnvSpec((4,), "float32", 2)
    assert _make("auto", mlp(spec, (8,))).name == "fast"
    assert _make("auto", mlp(spec, (8,), head="dueling")).name == "autograd"
    assert _make("autograd", mlp(spec, (8,))).name == "autograd"
    with pytest.raises(
        ConfigError, match="learner: fast cannot train this model: it handles a plain MLP"
    ):
        _make("fast", mlp(spec, (8,), head="dueling"))


def test_auto_falls_back_to_autograd_without_the_private_fused_op(monkeypatch, caplog):
    monkeypatch.delattr(torch, "_fused_adam_")
    fast_learner.fused_adam_refusal.cache_clear()
    try:
        spec = EnvSpec((4,), "float32", 2)
        with caplog.at_level("INFO"):
            assert _make("auto", mlp(spec, (8,))).name == "autograd"
        assert [r.message for r in caplog.records if "unavailable" in r.message] == [
            "learner=auto: the fast learner is unavailable (this torch has no "
            "torch._fused_adam_); using autograd"
        ]
        with pytest.raises(ConfigError, match=r"no torch\._fused_adam_"):
            _make("fast", mlp(spec, (8,)))
    finally:
        fast_learner.fused_adam_refusal.cache_clear()


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


def test_compiled_learner_matches_the_eager_one():
    """compile=true (the GPU option) runs the same update; held equal here on the CPU."""
    spec = EnvSpec((6,), "float32", 3)
    nets = [mlp(spec, (16,), head="dueling") for _ in range(4)]  # online/target pairs
    td = TDLoss(double_q=True, kind="huber", max_grad_norm=1.0)
    eager = AutogradLearner(nets[0], nets[1], td, lr=1e-2)
    compiled = AutogradLearner(nets[2], nets[3], td, lr=1e-2, compile=True)
    for seed in range(6):
        batch = random_batch(32, 6, 3, seed, n_step=True)
        a, b = eager.update(batch), compiled.update(batch)
        torch.testing.assert_close(a.td_errors, b.td_errors, rtol=1e-4, atol=1e-5)
    for p, q in zip(nets[0].parameters(), nets[2].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="compile"):
        make_learner(
            "fast", nets[0], nets[1], torch.device("cpu"), td, lr=1e-3, adam_eps=1e-8, compile=True
        )
