"""``dqn-train --help`` and the README's key table, both generated from ``dqn_cli.config``.

Imports nothing heavy (no Hydra, torch or gymnasium), so help prints at once.
``python -m dqn_cli.cli.keys --markdown`` prints the README table.
"""

from __future__ import annotations

import sys
from importlib import resources
from typing import Any

import yaml

from dqn_cli.cli.output import print_output
from dqn_cli.config import KeyDoc, RunOptions, config_keys, flatten_keys, section_help

GROUPS = ("algo", "buffer", "target", "model", "env", "logger")
DEFAULT_OPTIONS = {
    "algo": "dqn",
    "buffer": "uniform",
    "target": "hard",
    "model": "mlp",
    "env": "cartpole",
    "logger": "tensorboard",
}

HEADER = """\
dqn-train: train a Deep Q-Network agent on a discrete-action gymnasium env.

Usage: dqn-train [GROUP=OPTION ...] [KEY=VALUE ...]
  dqn-train algo=ddqn buffer=per target=soft env=lunarlander seed=3
  dqn-train env.id=Acrobot-v1 total_steps=100000 model.hidden=[128,128]
  dqn-train -m buffer.capacity=1000,10000 seed=0,1,2      # a sweep (Hydra multirun)
  dqn-train -m hydra/launcher=parallel seed=0,1,2,3        # ... jobs in parallel (also: slurm)
  dqn-train resume=outputs/DATE/TIME                       # continue an interrupted run
"""

FOOTER = """\
Runs are written to outputs/DATE/TIME (hydra.run.dir=... to choose).
The config a command would train with: dqn-train --cfg job [overrides].
Evaluate checkpoints with dqn-eval RUN_DIR; summarise a sweep with dqn-report SWEEP_DIR.
Hydra's own options: dqn-train --hydra-help
"""


def group_options(group: str) -> list[tuple[str, str]]:
    """(option, first line of its description) for each YAML file of a config group."""
    folder = resources.files("dqn_cli.conf") / group
    options = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        options.append((entry.name.removesuffix(".yaml"), _summary(entry.read_text())))
    return options


def _summary(text: str) -> str:
    """The first line of a YAML file's leading comment: its one-line description."""
    for line in text.splitlines():
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("# ").strip()
    return ""


def preset_values(group: str, option: str) -> dict[str, Any]:
    """The keys an option file sets, flattened to dotted names."""
    text = (resources.files("dqn_cli.conf") / group / f"{option}.yaml").read_text()
    values = yaml.safe_load(text) or {}
    values.pop("defaults", None)
    return flatten_keys(values)


def model_arguments() -> list[KeyDoc]:
    """The model options' own keys (``model.hidden``, ...), documented by the comment beside
    them in ``conf/model/<option>.yaml``."""
    docs = []
    for option, _ in group_options("model"):
        text = (resources.files("dqn_cli.conf") / "model" / f"{option}.yaml").read_text()
        values = yaml.safe_load(text) or {}
        for line in text.splitlines():
            name, _, rest = line.partition(":")
            if line.startswith(("#", " ")) or not rest or name in ("_target_", "head"):
                continue
            docs.append(
                KeyDoc(
                    name=f"model.{name}",
                    default=values[name],
                    type=f"model={option}",
                    allowed="",
                    help=rest.partition("#")[2].strip(),
                )
            )
    return docs


def fmt_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(fmt_value(v) for v in value) + "]"
    return str(value)


def all_keys() -> list[KeyDoc]:
    """Run options, then the general keys, then each section's: the order help reads in."""
    keys = list(config_keys())
    general = [k for k in keys if "." not in k.name]
    sections = [k for k in keys if "." in k.name]
    model_end = max(i for i, k in enumerate(sections) if k.name.startswith("model.")) + 1
    sections[model_end:model_end] = model_arguments()
    return [*config_keys(RunOptions), *general, *sections]


def render_help() -> str:
    lines = [HEADER, "Config groups (pick one option each; * = default):"]
    for group in GROUPS:
        for i, (option, about) in enumerate(group_options(group)):
            mark = "*" if DEFAULT_OPTIONS[group] == option else " "
            lines.append(f"  {group if i == 0 else '':<8} {mark}{option:<13} {about}")
    preset = preset_values("env", DEFAULT_OPTIONS["env"])
    lines += [
        "",
        "Keys: KEY=VALUE; steps are env steps unless noted. [default; allowed]",
        f"  ({DEFAULT_OPTIONS['env']}) = the value the default env preset sets instead",
    ]
    sections = section_help()
    current = None
    for doc in all_keys():
        name = doc.name.split(".", 1)[0] if "." in doc.name else ""
        if name != current:
            current = name
            title = name or "general"
            lines.append(f"\n  {title}: {sections[name]}" if name else f"\n  {title}:")
        facts = [fmt_value(doc.default)]
        if doc.name in preset and preset[doc.name] != doc.default:
            facts.append(f"({DEFAULT_OPTIONS['env']}) {fmt_value(preset[doc.name])}")
        if doc.allowed:
            facts.append(doc.allowed)
        if doc.type.startswith("model="):
            facts.append(doc.type)
        lines.append(f"    {doc.name:<24} {doc.help} [{'; '.join(facts)}]")
    lines += ["", FOOTER]
    return "\n".join(lines)


def render_markdown() -> str:
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for doc in all_keys():
        allowed = doc.allowed or doc.type.replace("model=", "with model=")
        if "null" in doc.type and "null" not in allowed:
            allowed += " or null"
        cells = [f"`{doc.name}`", fmt_value(doc.default), allowed, doc.help]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def main() -> None:
    print_output(render_markdown() if "--markdown" in sys.argv[1:] else render_help())


if __name__ == "__main__":
    main()
