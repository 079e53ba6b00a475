import copy

import torch
from torch import nn

from dqn_cli.targets import make_target_updater, polyak_update


def nets():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    return online, copy.deepcopy(online)


def perturb(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_hard_update_copies_every_period_env_steps_and_never_in_between():
    online, target = nets()
    updater = make_target_updater("hard", target, online, period=100, tau=0.5)
    snapshot = copy.deepcopy(target)
    step = 0
    for _ in range(24):  # 4 envs: steps 4, 8, ..., 96
        perturb(online)
        updater.after_gradient_step()
        updater.after_env_steps(step, step + 4)
        step += 4
        assert same(target, snapshot)
    perturb(online)
    updater.after_env_steps(step, step + 4)  # crosses 100
    assert same(target, online)


def test_soft_update_is_an_exact_polyak_average():
    online, target = nets()
    perturb(online)
    before = [p.clone() for p in target.parameters()]
    updater = make_target_updater("soft", target, online, period=1, tau=0.25)
    updater.after_env_steps(0, 1000)  # soft updates ignore env steps
    assert all(torch.equal(p, b) for p, b in zip(target.parameters(), before, strict=True))
    updater.after_gradient_step()
    for p, b, o in zip(target.parameters(), before, online.parameters(), strict=True):
        torch.testing.assert_close(p, 0.25 * o + 0.75 * b)


def test_polyak_with_tau_one_is_a_bitwise_copy():
    online, target = nets()
    perturb(online)
    polyak_update(target, online, 1.0)
    assert same(target, online)


def test_no_target_network_leaves_everything_alone():
    online, _ = nets()
    snapshot = copy.deepcopy(online)
    updater = make_target_updater("none", online, online, period=1, tau=1.0)
    updater.after_gradient_step()
    updater.after_env_steps(0, 10_000)
    assert same(online, snapshot)
