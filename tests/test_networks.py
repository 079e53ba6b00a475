import numpy as np
import pytest
import torch

from dqn_cli.env_spec import EnvSpec
from dqn_cli.fast_learner import backward, forward_keeping_activations
from dqn_cli.networks import (
    DuelingHead,
    HostQFunction,
    ModelError,
    build_q_network,
    greedy_policy,
    plain_mlp,
)
from dqn_cli.optim import Adam

SPECS = [
    (EnvSpec((4,), "float32", 2), lambda rng: rng.normal(size=(5, 4)).astype(np.float32)),
    (EnvSpec((3, 2), "uint8", 3), lambda rng: rng.integers(0, 256, (5, 3, 2)).astype(np.uint8)),
    (EnvSpec((), "int64", 4, obs_categories=16), lambda rng: rng.integers(0, 16, 5)),
]


def mlp(spec, hidden, head="linear"):
    torch.manual_seed(0)
    return build_q_network("dqn_cli.networks.MLP", head, {"hidden": list(hidden)}, spec)


@pytest.mark.parametrize(("spec", "sample"), SPECS)
def test_numpy_acting_matches_the_torch_network(spec, sample):
    net = mlp(spec, (32, 16))
    obs = sample(np.random.default_rng(0))
    with torch.no_grad():
        expected = net(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(HostQFunction(net)(obs), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        greedy_policy(net, torch.device("cpu"))(obs), expected.argmax(axis=1)
    )


def test_uint8_observations_are_scaled_once_for_every_model():
    spec = EnvSpec((4, 12, 12), "uint8", 3)
    net = build_q_network("dqn_cli.networks.MinAtarCNN", "linear", {}, spec)
    frames = torch.full((2, 4, 12, 12), 255, dtype=torch.uint8)
    assert net.encode(frames).max().item() == 1.0
    with torch.no_grad():
        torch.testing.assert_close(net(frames), net.net(torch.ones(2, 4, 12, 12)))


@pytest.mark.parametrize(
    ("target", "obs_shape", "layout"),
    [
        ("dqn_cli.networks.NatureCNN", (4, 84, 84), torch.channels_last),
        ("dqn_cli.networks.MinAtarCNN", (4, 10, 10), torch.contiguous_format),
    ],
)
def test_frames_are_encoded_into_the_layout_each_cnn_reads(target, obs_shape, layout):
    spec = EnvSpec(obs_shape, "uint8", 3)
    net = build_q_network(target, "linear", {}, spec)
    frames = torch.randint(
        0, 256, (3, *obs_shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    encoded = net.encode(frames)
    assert encoded.is_contiguous(memory_format=layout)
    torch.testing.assert_close(encoded, frames.float() / 255, rtol=0, atol=1e-7)
    with torch.no_grad():
        torch.testing.assert_close(net(frames), net.net(frames.float() / 255))


def test_numpy_acting_sees_every_update_without_copying():
    net = mlp(SPECS[0][0], (8,))
    host = HostQFunction(net)
    obs = np.ones((1, 4), dtype=np.float32)
    before = host(obs).copy()
    net.requires_grad_(False)
    optimizer = Adam(list(net.parameters()), lr=0.1)
    q, activations = forward_keeping_activations(plain_mlp(net), torch.as_tensor(obs))
    backward(plain_mlp(net), activations, torch.ones_like(q), optimizer.grads)
    optimizer.step()
    net.load_state_dict({k: v + 1 for k, v in net.state_dict().items()})
    with torch.no_grad():
        expected = net(torch.as_tensor(obs)).numpy()
    assert not np.allclose(before, expected)
    np.testing.assert_allclose(host(obs), expected, rtol=1e-5)


@pytest.mark.parametrize(("spec", "sample"), SPECS)
@pytest.mark.parametrize("hidden", [(), (16,), (32, 16)])
def test_explicit_backward_matches_autograd(spec, sample, hidden):
    net = mlp(spec, hidden)
    obs = torch.as_tensor(sample(np.random.default_rng(1)))
    grad_q = torch.randn(len(obs), spec.n_actions)
    net.requires_grad_(False)
    q, activations = forward_keeping_activations(plain_mlp(net), net.encode(obs))
    grads = [torch.full_like(p, float("nan")) for p in net.parameters()]  # all must be written
    backward(plain_mlp(net), activations, grad_q, grads)

    net.requires_grad_(True)
    reference = net(obs)
    torch.testing.assert_close(q, reference.detach())
    (reference * grad_q).sum().backward()
    for ours, param in zip(grads, net.parameters(), strict=True):
        torch.testing.assert_close(ours, param.grad)


def test_dueling_head_subtracts_the_mean_advantage():
    head = DuelingHead(3, 4)
    features = torch.randn(5, 3)
    with torch.no_grad():
        q = head(features)
        value, advantage = head.value(features), head.advantage(features)
    torch.testing.assert_close(q.mean(dim=1, keepdim=True), value)
    torch.testing.assert_close(q - q.mean(dim=1, keepdim=True), advantage - advantage.mean(1, True))


@pytest.mark.parametrize(
    ("target", "spec"),
    [
        ("dqn_cli.networks.MLP", EnvSpec((4,), "float32", 2)),
        ("dqn_cli.networks.NatureCNN", EnvSpec((4, 84, 84), "uint8", 6)),
        ("dqn_cli.networks.MinAtarCNN", EnvSpec((4, 10, 10), "uint8", 3)),
    ],
)
@pytest.mark.parametrize("head", ["linear", "dueling"])
def test_every_body_takes_every_head(target, spec, head):
    net = build_q_network(target, head, {}, spec)
    batch = torch.zeros(2, *spec.obs_shape, dtype=getattr(torch, spec.obs_dtype))
    assert net(batch).shape == (2, spec.n_actions)
    assert (plain_mlp(net) is not None) == (target.endswith("MLP") and head == "linear")


def test_nature_cnn_is_the_published_architecture():
    net = build_q_network(
        "dqn_cli.networks.NatureCNN", "linear", {}, EnvSpec((4, 84, 84), "uint8", 6)
    )
    convs = [m for m in net.net.torso if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (32, 8, 4),
        (64, 4, 2),
        (64, 3, 1),
    ]
    assert net.net.head[0].in_features == 3136 and net.net.head[0].out_features == 512


@pytest.mark.parametrize(
    ("target", "head", "kwargs", "message"),
    [
        ("no_such_module.Net", "linear", {}, "cannot import module 'no_such_module'"),
        ("dqn_cli.networks.NoSuchNet", "linear", {}, "has no class 'NoSuchNet'"),
        ("os.system", "linear", {}, "os.system is not a torch.nn.Module class"),
        ("dqn_cli.networks.build_q_network", "linear", {}, "is not a torch.nn.Module class"),
        ("dqn_cli.networks.MLP", "linear", {"widths": [3]}, "model.widths: not an argument of"),
        ("dqn_cli.networks.MLP", "linear", {"hidden": [8, 0]}, "model.hidden[1]: must be"),
        ("dqn_cli.networks.NatureCNN", "linear", {}, "needs image observations"),
    ],
)
def test_model_errors_are_one_line(target, head, kwargs, message):
    with pytest.raises(ModelError) as info:
        build_q_network(target, head, kwargs, EnvSpec((4,), "float32", 2))
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("obs_shape", "fits"), [((4, 36, 36), True), ((4, 35, 35), False)])
def test_the_nature_cnn_needs_frames_its_convolutions_fit_in(obs_shape, fits):
    """36x36 is the smallest input the three convolutions leave a 1x1 map of (8/4, 4/2, 3/1)."""
    spec = EnvSpec(obs_shape, "uint8", 2)
    if fits:
        net = build_q_network("dqn_cli.networks.NatureCNN", "linear", {}, spec)
        assert net(torch.zeros(1, *obs_shape, dtype=torch.uint8)).shape == (1, 2)
        assert net.net.head[0].in_features == 64
        return
    with pytest.raises(ModelError, match=r"\[4, 35, 35\] are too small for this CNN"):
        build_q_network("dqn_cli.networks.NatureCNN", "linear", {}, spec)


def test_a_user_model_gets_shape_dtype_actions_and_its_own_keys(monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent / "user_models"))
    spec = EnvSpec((4,), "float32", 2)
    net = build_q_network("tiny_qnet.TinyQNet", "linear", {"width": 7}, spec)
    assert net.net.body[1].out_features == 7
    with pytest.raises(ModelError, match="takes no head argument"):
        build_q_network("tiny_qnet.TinyQNet", "dueling", {}, spec)
