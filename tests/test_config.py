import pytest

from dqn_cli.config import ConfigError, TrainConfig, parse_train_config


def test_defaults_parse_and_round_trip():
    config = parse_train_config({})
    assert config == TrainConfig()
    assert parse_train_config(config.to_dict()) == config


def test_nested_values_are_typed():
    config = parse_train_config({"lr": 1, "model": {"hidden": [32, 16]}, "buffer": {"kind": "per"}})
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.model.args == {"hidden": [32, 16]}
    assert config.buffer.kind == "per"


@pytest.mark.parametrize(
    ("raw", "key", "fragment"),
    [
        ({"total_steps": "abc"}, "total_steps", "expected an integer"),
        ({"total_steps": 1.5}, "total_steps", "expected an integer"),
        ({"batch_size": True}, "batch_size", "expected an integer"),
        ({"lr": "fast"}, "lr", "expected a number"),
        ({"total_steps": 0}, "total_steps", "> 0"),
        ({"gamma": 1.5}, "gamma", "in [0, 1]"),
        ({"target": {"tau": 0.0}}, "target.tau", "in (0, 1]"),
        ({"buffer": {"alpha": -0.1}}, "buffer.alpha", ">= 0"),
        ({"buffer": {"beta": 2.0}}, "buffer.beta", "in [0, 1]"),
        ({"buffer": {"capacity": 0}}, "buffer.capacity", "> 0"),
        (
            {"buffer": {"capacity": 10}, "batch_size": 32, "learning_starts": 32},
            "batch_size",
            "<= buffer.capacity",
        ),
        ({"learning_starts": 10, "batch_size": 64}, "learning_starts", ">= batch_size"),
        ({"device": "tpu"}, "device", "allowed: auto, cpu, cuda"),
        ({"algo": {"name": "rainbow"}}, "algo.name", "allowed: dqn, ddqn"),
        ({"model": {"head": "wide"}}, "model.head", "allowed: linear, dueling"),
        ({"model": {"_target_": "NoDots"}}, "model._target_", "expected module.Class"),
        ({"model": {"hidden": [64, float("inf")]}}, "model.hidden", "finite"),
        ({"exploration": {"end": 1.5}}, "exploration.end", "in [0, 1]"),
        ({"lrr": 0.1}, "lrr", "unknown key"),
        ({"target": {"periodd": 5}}, "target.periodd", "unknown key"),
    ],
)
def test_bad_values_name_the_key_in_one_line(raw, key, fragment):
    with pytest.raises(ConfigError) as info:
        parse_train_config(raw)
    message = str(info.value)
    assert message.startswith(f"{key}: ")
    assert fragment in message
    assert "\n" not in message


def test_no_replay_buffer_holds_one_batch():
    config = parse_train_config(
        {"buffer": {"kind": "none", "capacity": None}, "batch_size": 8, "learning_starts": 8}
    )
    assert config.replay_capacity == 8
