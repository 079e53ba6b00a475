"""One source of truth: every key is defined once in dqn_cli/config.py, with its doc, and
help, the README table, Hydra's defaults and the YAML presets agree with it."""

import dataclasses
import subprocess
import sys
import typing
from importlib import resources
from pathlib import Path

import pytest
import yaml

from dqn_cli.cli.compose import compose_config, split_config
from dqn_cli.cli.keys import all_keys, model_arguments, render_markdown
from dqn_cli.config import RunOptions, TrainConfig, config_keys, flatten_keys, parse_train_config

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- keys:begin", "<!-- keys:end -->"


def _all_fields(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield prefix + f.name, f
            yield from _all_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f


@pytest.mark.parametrize("cls", [TrainConfig, RunOptions])
def test_every_key_and_section_has_a_one_line_meaning(cls):
    for name, f in _all_fields(cls):
        text = f.metadata.get("help")
        assert text and text.strip() and "\n" not in text, f"{name} has no help line"


def _yaml_files():
    root = resources.files("dqn_cli.conf")
    for group in ("algo", "buffer", "target", "env", "logger"):
        for entry in (root / group).iterdir():
            if entry.name.endswith(".yaml"):
                yield group, entry


@pytest.mark.parametrize(
    ("group", "entry"), list(_yaml_files()), ids=lambda v: getattr(v, "name", v)
)
def test_yaml_presets_set_only_defined_keys(group, entry):
    known = {k.name for k in config_keys()} | {k.name for k in model_arguments()}
    data = yaml.safe_load(entry.read_text()) or {}
    data.pop("defaults", None)
    if group != "env" and data:  # group files are packaged at their group
        data = {group: data}
    unknown = set(flatten_keys(data)) - known
    assert not unknown, f"{entry.name} sets keys not defined in dqn_cli/config.py: {unknown}"


def test_composed_defaults_hold_every_key_once():
    run, raw = split_config(compose_config([]))
    assert set(run) == {"resume", "overwrite"}
    flat = set(flatten_keys(raw))
    assert flat == {k.name for k in config_keys()} | {"model.hidden"}  # the mlp's own key
    parse_train_config(raw)


def test_every_model_argument_has_a_one_line_meaning():
    docs = model_arguments()
    assert {d.name for d in docs} >= {"model.hidden", "model.features"}
    for doc in docs:
        assert doc.help, f"{doc.name} ({doc.type}) has no comment in its conf/model file"


def test_defaults_come_from_the_dataclasses():
    # An option that sets nothing but its kind keeps every other default of its section.
    _, raw = split_config(compose_config(["buffer=per", "target=soft"]))
    config = parse_train_config(raw)
    assert config.buffer.alpha == TrainConfig().buffer.alpha
    assert config.target.tau == TrainConfig().target.tau


def test_readme_key_table_is_the_generated_one():
    text = README.read_text()
    assert BEGIN in text and END in text, "README.md lost its generated key table markers"
    block = text.split(BEGIN, 1)[1].split("-->", 1)[1].split(END, 1)[0].strip()
    assert block == render_markdown(), (
        "README key table is stale: regenerate it with python -m dqn_cli.cli.keys --markdown"
    )


def test_help_lists_every_key_and_group_option(run_dqn_train):
    done = run_dqn_train("--help")
    assert done.returncode == 0
    for doc in all_keys():
        assert f"    {doc.name} " in done.stdout, f"--help misses {doc.name}"
    for option in ("ddqn", "prioritized", "soft", "lunarlander", "mountaincar"):
        assert option in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["lr=-1"],
        ["lr_rate=0.1"],
        ["algo=rainbow"],
        ["env.id=NoSuchEnv-v0"],
        ["logger=wandb", "lr=-1"],
        ["logger=mlflow", "env.id=NoSuchEnv-v0"],
    ],
)
def test_help_and_config_errors_import_nothing_heavy(args):
    code = (
        "import sys\n"
        f"sys.argv = ['dqn-train', *{args!r}]\n"
        "from dqn_cli.cli.train import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted({'torch', 'rich', 'tensorboard', 'wandb', 'mlflow'} & set(sys.modules))\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr
