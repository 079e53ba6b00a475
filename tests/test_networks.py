import numpy as np
import pytest
import torch

from dqn_cli.networks import EnvSpec, HostQFunction, QNetwork, greedy_policy
from dqn_cli.optim import Adam

SPECS = [
    (EnvSpec((4,), "float32", 2), lambda rng: rng.normal(size=(5, 4)).astype(np.float32)),
    (EnvSpec((3, 2), "uint8", 3), lambda rng: rng.integers(0, 256, (5, 3, 2)).astype(np.uint8)),
    (EnvSpec((), "int64", 4, obs_categories=16), lambda rng: rng.integers(0, 16, 5)),
]


@pytest.mark.parametrize(("spec", "sample"), SPECS)
def test_numpy_acting_matches_the_torch_network(spec, sample):
    torch.manual_seed(0)
    net = QNetwork(spec, (32, 16))
    obs = sample(np.random.default_rng(0))
    with torch.no_grad():
        expected = net(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(HostQFunction(net)(obs), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        greedy_policy(net, torch.device("cpu"))(obs), expected.argmax(axis=1)
    )


def test_numpy_acting_sees_every_update_without_copying():
    torch.manual_seed(0)
    net = QNetwork(SPECS[0][0], (8,))
    host = HostQFunction(net)
    obs = np.ones((1, 4), dtype=np.float32)
    before = host(obs).copy()
    optimizer = Adam(list(net.parameters()), lr=0.1)
    q, activations = net.forward_keeping_activations(torch.as_tensor(obs))
    net.backward(activations, torch.ones_like(q), optimizer.grads)
    optimizer.step()
    net.load_state_dict({k: v + 1 for k, v in net.state_dict().items()})
    with torch.no_grad():
        expected = net(torch.as_tensor(obs)).numpy()
    assert not np.allclose(before, expected)
    np.testing.assert_allclose(host(obs), expected, rtol=1e-5)


@pytest.mark.parametrize(("spec", "sample"), SPECS)
@pytest.mark.parametrize("hidden", [(), (16,), (32, 16)])
def test_backward_matches_autograd(spec, sample, hidden):
    torch.manual_seed(0)
    net = QNetwork(spec, hidden)
    obs = torch.as_tensor(sample(np.random.default_rng(1)))
    grad_q = torch.randn(len(obs), spec.n_actions)
    q, activations = net.forward_keeping_activations(obs)
    grads = [torch.full_like(p, float("nan")) for p in net.parameters()]  # all must be written
    net.backward(activations, grad_q, grads)

    params = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    x = net.inputs(obs)
    for i in range(0, len(params), 2):
        x = torch.nn.functional.linear(x, params[i], params[i + 1])
        if i + 2 < len(params):
            x = torch.relu(x)
    torch.testing.assert_close(q, x.detach())
    (x * grad_q).sum().backward()
    for ours, reference in zip(grads, params, strict=True):
        torch.testing.assert_close(ours, reference.grad)
