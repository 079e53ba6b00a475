import numpy as np
import pytest
import torch

from dqn_cli.buffers import (
    LatestSampler,
    PrioritizedSampler,
    TransitionStorage,
    make_replay_buffer,
)
from dqn_cli.buffers.storage import LiveSlots
from dqn_cli.buffers.sum_tree import SumTree


def fill(buffer, n, start=0):
    ids = np.arange(start, start + n, dtype=np.float32)
    obs = np.stack([ids, ids], axis=1)
    buffer.add(obs, np.zeros(n, dtype=np.int64), ids, obs + 0.5, np.zeros(n, dtype=bool), 0.99)


def test_storage_is_circular_and_keeps_dtypes():
    storage = TransitionStorage(5, (2,), np.dtype("uint8"))
    assert storage.obs.dtype == np.uint8 and storage.obs.shape == (5, 2)
    for start in (0, 3, 6):
        ids = np.arange(start, start + 3)
        storage.add(
            np.stack([ids, ids], 1),
            ids,
            ids.astype(np.float32),
            np.stack([ids, ids], 1),
            np.zeros(3),
            0.5 ** (ids % 3 + 1),  # n-step discounts differ per transition
        )
    assert storage.size == 5
    # 9 transitions into 5 slots: the newest five (4..8) remain, 8 was written last.
    assert sorted(storage.rewards.tolist()) == [4, 5, 6, 7, 8]
    assert storage.rewards[storage.newest(2)].tolist() == [7, 8]
    assert storage.discounts[storage.newest(2)].tolist() == [0.5 ** (7 % 3 + 1), 0.5 ** (8 % 3 + 1)]


def test_sum_tree_totals_and_prefix_search():
    tree = SumTree(5)  # not a power of two on purpose
    tree.set(np.arange(5), np.array([1.0, 2.0, 0.0, 3.0, 4.0]))
    assert tree.total == pytest.approx(10.0)
    # cumulative intervals: item0 [0,1), item1 [1,3), item2 empty, item3 [3,6), item4 [6,10)
    found = tree.find(np.array([0.0, 0.99, 1.0, 2.99, 3.0, 5.99, 6.0, 9.999]))
    assert found.tolist() == [0, 0, 1, 1, 3, 3, 4, 4]
    tree.set(np.array([4, 4]), np.array([5.0, 1.0]))  # duplicates: last wins
    assert tree.total == pytest.approx(7.0)


def test_sum_tree_never_returns_an_empty_leaf_on_round_off():
    tree = SumTree(8)
    tree.set(np.arange(3), np.array([0.1, 0.2, 0.3]))
    found = tree.find(np.array([np.nextafter(tree.total, 0), tree.total]))
    assert set(found.tolist()) <= {0, 1, 2}


def test_prioritized_sampling_follows_priorities_and_new_items_get_max():
    rng = np.random.default_rng(0)
    buffer = make_replay_buffer(
        "per", 4, (2,), np.dtype("float32"), rng, torch.device("cpu"), alpha=1.0, eps=0.0
    )
    fill(buffer, 4)
    sampler = buffer.sampler
    assert isinstance(sampler, PrioritizedSampler)
    # Priorities |td| + eps with alpha 1: 1, 1, 2, 4 -> probabilities 1/8, 1/8, 2/8, 4/8.
    buffer.update_priorities(np.arange(4), torch.tensor([1.0, -1.0, 2.0, -4.0]))
    counts = np.zeros(4)
    for _ in range(500):
        batch = buffer.sample(32, beta=1.0)
        np.add.at(counts, batch.slots, 1)
    assert counts / counts.sum() == pytest.approx([1 / 8, 1 / 8, 2 / 8, 4 / 8], abs=0.02)
    # Importance weights (N * P)^-beta normalised by the batch max: item 0 gets 1, item 3 gets 1/4.
    batch = buffer.sample(32, beta=1.0)
    weights = dict(zip(batch.slots.tolist(), batch.weights.tolist(), strict=True))
    assert weights[0] == pytest.approx(1.0) and weights[3] == pytest.approx(0.25)
    # A new transition (overwriting slot 0) gets the largest priority seen so far: 4.
    fill(buffer, 1, start=10)
    assert sampler.priorities(np.array([0]))[0] == pytest.approx(4.0)


def test_prioritized_sampling_is_stratified():
    rng = np.random.default_rng(1)
    sampler = PrioritizedSampler(8, alpha=1.0, eps=1e-6)
    sampler.on_add(np.arange(8))  # equal priorities: each of 8 strata maps to one item
    slots, weights = sampler.sample(8, LiveSlots(8, 0, 8), np.arange(8), rng, beta=0.5)
    assert slots.tolist() == list(range(8))
    assert weights == pytest.approx(np.ones(8))


def test_pending_adds_and_evictions_reach_the_tree_in_arrival_order():
    sampler = PrioritizedSampler(8, alpha=1.0, eps=0.0)
    sampler.on_add(slice(0, 8))
    sampler.update_priorities(np.arange(8), torch.full((8,), 3.0))  # max priority now 3
    # One step at a time (merged into one range), an eviction of slots they wrote, then adds
    # over part of it again: each slot ends as its last event left it.
    for start in range(0, 6):
        sampler.on_add(slice(start, start + 1))
    sampler.on_evict(np.array([1, 2, 4]))
    sampler.on_add(slice(4, 5))
    sampler.on_add(slice(5, 6))
    assert sampler.priorities(np.arange(8)).tolist() == [3.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    assert sampler.tree.total == pytest.approx(18.0)


def test_priority_is_abs_td_error_plus_eps_to_the_alpha():
    sampler = PrioritizedSampler(4, alpha=0.5, eps=0.01)
    sampler.on_add(np.arange(4))
    sampler.update_priorities(np.array([2]), torch.tensor([-0.99]))
    assert sampler.priorities(np.array([2]))[0] == pytest.approx(1.0**0.5)
    sampler.update_priorities(np.array([1]), torch.tensor([3.99]))
    assert sampler.priorities(np.array([1]))[0] == pytest.approx(2.0)
    assert sampler.max_priority == pytest.approx(2.0)


def test_uniform_buffer_has_unit_weights_and_ignores_priorities():
    buffer = make_replay_buffer(
        "uniform", 10, (2,), np.dtype("float32"), np.random.default_rng(0), torch.device("cpu")
    )
    fill(buffer, 6)
    buffer.update_priorities(np.arange(3), torch.ones(3))
    batch = buffer.sample(16)
    assert torch.all(batch.weights == 1)
    assert set(batch.rewards.tolist()) <= set(range(6))
    # next_obs stays paired with its own obs.
    assert torch.equal(batch.next_obs, batch.obs + 0.5)


def test_no_replay_trains_on_exactly_the_newest_transitions():
    buffer = make_replay_buffer(
        "none", 4, (2,), np.dtype("float32"), np.random.default_rng(0), torch.device("cpu")
    )
    assert isinstance(buffer.sampler, LatestSampler)
    fill(buffer, 10)
    assert buffer.sample(4).rewards.tolist() == [6, 7, 8, 9]


@pytest.mark.parametrize("damage", ["missing", "shape", "dtype", "size", "cursor"])
def test_damaged_transition_state_is_refused(damage):
    storage = TransitionStorage(8, (2,), np.dtype("float32"))
    source = make_replay_buffer(
        "uniform", 8, (2,), np.dtype("float32"), np.random.default_rng(0), torch.device("cpu")
    )
    fill(source, 5)
    state = source.storage.state_dict()
    if damage == "missing":
        del state["discounts"]
    elif damage == "shape":
        state["obs"] = state["obs"][:, :1]
    elif damage == "dtype":
        state["actions"] = state["actions"].int()
    elif damage == "size":
        state["size"] = 9
    else:
        state["cursor"] = 2  # 5 stored in a ring of 8: the next slot is 5
    with pytest.raises(ValueError):
        storage.load_state_dict(state)
    assert storage.size == 0
