"""Shell completion of the installed dqn-train (Hydra's --shell-completion): config groups'
options and keys, through the query Hydra's bash script makes and through the script itself."""

import os
import subprocess

import pytest

from tests.helpers import installed_command, run_installed


def bash_query(line: str, cwd) -> set[str]:
    """What dqn-train offers for ``line`` with the cursor at its end, asked as Hydra's bash
    completion asks: COMP_LINE and COMP_POINT in the environment, ``-sc query=bash``."""
    env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line))}
    done = run_installed("dqn-train", "-sc", "query=bash", cwd=cwd, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return set(done.stdout.split())


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "dqn-train buffer=",
            {"buffer=uniform", "buffer=per", "buffer=prioritized", "buffer=none"},
        ),
        ("dqn-train algo=d", {"algo=dqn", "algo=ddqn"}),
        ("dqn-train target=", {"target=hard", "target=soft", "target=none"}),
    ],
)
def test_group_options_complete(line, expected, tmp_path):
    assert bash_query(line, tmp_path) == expected
    assert list(tmp_path.iterdir()) == []  # completing starts no run


def test_keys_of_a_section_complete(tmp_path):
    offered = bash_query("dqn-train exploration.", tmp_path)
    assert {"exploration.start=", "exploration.end=", "exploration.steps="} <= offered


def test_the_installed_bash_script_completes(tmp_path):
    """The README's line: eval "$(dqn-train -sc install=bash)", then a <Tab> after algo=d."""
    script = (
        'eval "$(dqn-train -sc install=bash)"\n'
        'COMP_LINE="dqn-train algo=d"; COMP_POINT=${#COMP_LINE}\n'
        "COMP_WORDS=(dqn-train algo=d); COMP_CWORD=1\n"
        "hydra_bash_completion\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    bin_dir = os.path.dirname(installed_command("dqn-train"))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == {"algo=dqn", "algo=ddqn"}


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_install_scripts_name_the_installed_command(shell, tmp_path):
    done = run_installed("dqn-train", "-sc", f"install={shell}", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "dqn-train" in done.stdout and "query=" in done.stdout
