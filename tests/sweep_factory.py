"""Sweep dirs written file by file, as dqn-train's jobs write them, without training: for report
tests that need many seeds, exact final returns, or files to corrupt."""

import json
from pathlib import Path

import yaml


def write_job(
    sweep: Path,
    name: str,
    overrides: list[str],
    final: float,
    env_id: str = "CartPole-v1",
) -> Path:
    """One completed job: .hydra/overrides.yaml, .hydra/config.yaml and summary.json."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    seed = next((int(o.split("=")[1]) for o in overrides if o.startswith("seed=")), 0)
    config = {"seed": seed, "env": {"id": env_id}, "total_steps": 1000}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {
        "status": "completed",
        "total_steps": 1000,
        "final_eval_return_mean": final,
        "best_eval_return_mean": final + 1.0,
        "wall_seconds": 2.0,
        "steps_per_second": 500.0,
    }
    (job / "summary.json").write_text(json.dumps(summary, indent=2))
    return job


def write_sweep(sweep: Path, finals: dict[str, list[float]], env_id: str = "CartPole-v1") -> Path:
    """``{"buffer=uniform": [returns of seeds 0, 1, ...], ...}``: one job per (config, seed),
    numbered like Hydra's, with the config's overrides (space-separated) and ``seed=N``."""
    number = 0
    for config, returns in finals.items():
        for seed, final in enumerate(returns):
            write_job(sweep, str(number), [*config.split(), f"seed={seed}"], final, env_id)
            number += 1
    return sweep
