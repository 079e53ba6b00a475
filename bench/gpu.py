"""The CUDA path: one update of each pixel model on the GPU (textbook autograd + torch Adam vs
dqn-cli eager vs dqn-cli with compile=true), the GPU learner held equal to the CPU one, and
end-to-end env steps/s of short Atari runs with and without compile.

Needs a CUDA device; prints one line and exits 0 where there is none, so `make bench` can list
it on any machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from bench.common import fmt, machine_header, print_table
from bench.update_cost import autograd_update, random_batch
from dqn_cli.env_spec import EnvSpec
from dqn_cli.learner import AutogradLearner, TDLoss
from dqn_cli.networks import build_q_network

_TENSOR_FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated", "discounts", "weights")
MODELS = [
    ("nature_cnn", "dqn_cli.networks.NatureCNN", EnvSpec((4, 84, 84), "uint8", 6), 32),
    ("minatar_cnn", "dqn_cli.networks.MinAtarCNN", EnvSpec((4, 10, 10), "uint8", 3), 32),
]


def cuda_seconds(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call, measured between CUDA-synchronised points after a warm-up."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def update_rows(calls: int) -> list[list[str]]:
    device = torch.device("cuda")
    rows = []
    td = TDLoss(double_q=False, kind="huber", max_grad_norm=10.0)
    for label, target, spec, batch_size in MODELS:
        torch.manual_seed(0)
        online = build_q_network(target, "linear", {}, spec).to(device)
        nets = [copy.deepcopy(online) for _ in range(6)]
        batch = random_batch(spec, batch_size, seed=1)
        batch = replace(batch, **{name: getattr(batch, name).to(device) for name in _TENSOR_FIELDS})
        textbook_opt = torch.optim.Adam(nets[0].parameters(), lr=1e-4)

        def textbook(nets=nets, batch=batch, opt=textbook_opt) -> None:
            autograd_update(nets[0], nets[1], opt, batch, 0.99, False, "huber", 10.0)

        eager = AutogradLearner(nets[2], nets[3], td, lr=1e-4)
        compiled = AutogradLearner(nets[4], nets[5], td, lr=1e-4, compile=True)
        started = time.perf_counter()
        compiled.update(batch)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - started
        t_text = cuda_seconds(textbook, calls) * 1e6
        t_eager = cuda_seconds(lambda e=eager, b=batch: e.update(b), calls) * 1e6
        t_comp = cuda_seconds(lambda c=compiled, b=batch: c.update(b), calls) * 1e6
        rows.append(
            [
                f"{label}, batch {batch_size}",
                fmt(t_text),
                fmt(t_eager),
                fmt(t_comp),
                f"{t_eager / t_text:.2f}",
                f"{t_comp / t_text:.2f}",
                f"{compile_s:.1f}",
            ]
        )
    return rows


def cpu_and_gpu_agree(updates: int) -> float:
    """Largest weight difference between the same updates on the CPU and on the GPU."""
    _, target, spec, batch_size = MODELS[1]
    td = TDLoss(double_q=True, kind="huber", max_grad_norm=10.0)
    torch.manual_seed(0)
    cpu_online = build_q_network(target, "dueling", {}, spec)
    gpu_online = copy.deepcopy(cpu_online).cuda()
    cpu = AutogradLearner(cpu_online, copy.deepcopy(cpu_online), td, lr=1e-3)
    gpu = AutogradLearner(gpu_online, copy.deepcopy(gpu_online), td, lr=1e-3)
    for seed in range(updates):
        batch = random_batch(spec, batch_size, seed=seed)
        cpu.update(batch)
        gpu.update(replace(batch, **{k: getattr(batch, k).cuda() for k in _TENSOR_FIELDS}))
    return max(
        float((p.detach() - q.detach().cpu()).abs().max())
        for p, q in zip(cpu_online.parameters(), gpu_online.parameters(), strict=True)
    )


def training_rows(steps: int, env_id: str) -> list[list[str]]:
    """Env steps/s of short `dqn-train env=atari` runs on the GPU, eager vs compile=true."""
    rows = []
    for compile_flag in ("false", "true"):
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / "run"
            args = [
                sys.executable,
                "-m",
                "dqn_cli.cli.train",
                "env=atari",
                f"env.id={env_id}",
                "device=cuda",
                f"compile={compile_flag}",
                f"total_steps={steps}",
                f"learning_starts={steps // 5}",
                "buffer.capacity=100000",
                f"eval.every={steps}",
                "eval.episodes=1",
                f"checkpoint.every={steps}",
                f"hydra.run.dir={run_dir}",
            ]
            done = subprocess.run(args, capture_output=True, text=True)
            if done.returncode != 0:
                rows.append([f"compile={compile_flag}", "failed", done.stderr.strip()[-200:]])
                continue
            summary = json.loads((run_dir / "summary.json").read_text())
            rows.append(
                [
                    f"compile={compile_flag}",
                    f"{summary['steps_per_second']:.0f}",
                    f"{summary['wall_seconds']:.1f}",
                ]
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="timed updates per side")
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per training run")
    parser.add_argument("--env", default="ALE/Pong-v5")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench.gpu: no CUDA device here; skipped")
        return 0
    print(machine_header("bench.gpu: the CUDA path"))
    print(f"# GPU: {torch.cuda.get_device_name()}")
    print_table(
        [
            "update",
            "textbook us",
            "dqn-cli us",
            "dqn-cli compile us",
            "eager ratio",
            "compile ratio",
            "compile s",
        ],
        update_rows(args.calls),
    )
    print(f"\nCPU vs GPU, 50 Double-DQN updates: max |weight diff| {cpu_and_gpu_agree(50):.2e}")
    print(f"\ndqn-train env=atari env.id={args.env} device=cuda, {args.steps} env steps:")
    print_table(["run", "env steps/s", "wall s"], training_rows(args.steps, args.env))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
