"""Run every benchmark in turn and write what they print into docs/benchmark-results.md.

    .venv/bin/python -m bench.results [--quick] [--out PATH] [--dry-run]

This is what ``make bench`` (and ``make bench-quick``: ``--quick``) runs, and the one place that
lists the benchmark commands and their arguments. Each benchmark runs as its own process, in
the order of ``BENCHMARKS``; its output streams to the terminal as it comes and is written into
the results file under a heading of its own: the tables as Markdown tables, the lines around
them (each script's own header, progress lines, verdicts) as text blocks. The file starts with
the machine (CPU, cores, load average), the package versions, the date and the git commit the
figures were taken at, so a table can be traced to the code and the machine that made it.

``--quick`` runs the same benchmarks with one repeat and shorter runs, for a check of the tools
rather than figures to quote, and writes docs/benchmark-results-quick.md, so it never replaces
the full results. A benchmark that fails is recorded as failed with the end of its stderr; the
others still run, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.common import ROOT, machine_facts

FULL_RESULTS = ROOT / "docs" / "benchmark-results.md"
QUICK_RESULTS = ROOT / "docs" / "benchmark-results-quick.md"
STDERR_TAIL_LINES = 20


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: a heading, what it measures, and its arguments to python, full and quick."""

    name: str
    measures: str
    full: tuple[str, ...]
    quick: tuple[str, ...]

    def args(self, quick: bool) -> tuple[str, ...]:
        return self.quick if quick else self.full

    def argv(self, quick: bool) -> list[str]:
        return [sys.executable, *self.args(quick)]

    def shown(self, quick: bool) -> str:
        """The command as a reader would type it."""
        return shlex.join(["python", *self.args(quick)])


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "bench.peers",
        "dqn-train vs Stable-Baselines3 DQN at identical settings, whole processes",
        ("-m", "bench.peers", "--repeats", "3"),
        ("-m", "bench.peers", "--repeats", "1"),
    ),
    Benchmark(
        "bench.atari_peers",
        "dqn-train vs Stable-Baselines3 DQN on Atari Pong, whole processes, and one update",
        ("-m", "bench.atari_peers", "--repeats", "3"),
        ("-m", "bench.atari_peers", "--steps", "2000", "--repeats", "1", "--update-budget", "0.3"),
    ),
    Benchmark(
        "bench.buffers",
        "replay buffer operations, against a naive O(N) prioritized replay",
        ("-m", "bench.buffers"),
        ("-m", "bench.buffers", "--budget", "0.1", "--repeats", "3"),
    ),
    Benchmark(
        "bench.update_cost",
        "one gradient update, dqn-cli vs autograd + torch.optim.Adam",
        ("-m", "bench.update_cost"),
        ("-m", "bench.update_cost", "--budget", "0.3", "--repeats", "3"),
    ),
    Benchmark(
        "bench.per_cost",
        "training wall time with buffer=per vs buffer=uniform",
        ("-m", "bench.per_cost", "--repeats", "2"),
        ("-m", "bench.per_cost", "--steps", "20000", "--repeats", "1"),
    ),
    Benchmark(
        "bench.vector_envs",
        "env steps/s by num_envs, collecting and training",
        ("-m", "bench.vector_envs", "--repeats", "2"),
        (
            "-m",
            "bench.vector_envs",
            "--repeats",
            "1",
            "--collect-steps",
            "8000",
            "--train-steps",
            "6000",
        ),
    ),
    Benchmark(
        "bench.ale_vector",
        "Atari collection env steps/s, gymnasium's SyncVectorEnv vs ale-py's C++ vector env",
        ("-m", "bench.ale_vector", "--repeats", "2"),
        (
            "-m",
            "bench.ale_vector",
            "--repeats",
            "1",
            "--steps",
            "2000",
            "--train-steps",
            "2000",
            "--episodes",
            "16",
        ),
    ),
    Benchmark(
        "bench.memory",
        "replay storage size and resident memory over a long run",
        ("-m", "bench.memory", "--steps", "200000"),
        ("-m", "bench.memory", "--steps", "60000", "--capacity", "20000"),
    ),
    Benchmark(
        "bench.replay_memory",
        "frame-stack replay for Atari, plain and lz4-compressed frames: resident memory filled, "
        "checkpoint write, add/sample cost",
        ("-m", "bench.replay_memory", "--capacity", "1000000", "--compression", "none", "lz4"),
        ("-m", "bench.replay_memory", "--quick", "--compression", "none", "lz4"),
    ),
    Benchmark(
        "bench.gpu",
        "the CUDA path: pixel-model updates, compile=true, GPU vs CPU learner (skips on CPU)",
        ("-m", "bench.gpu"),
        ("-m", "bench.gpu", "--steps", "5000", "--calls", "50"),
    ),
    Benchmark(
        "bench.cli_latency",
        "dqn-train --help and config errors, whole processes",
        ("-m", "bench.cli_latency", "--repeats", "5"),
        ("-m", "bench.cli_latency", "--repeats", "2"),
    ),
    Benchmark(
        "bench.profile_step",
        "where a training step's time goes, phase by phase",
        ("-m", "bench.profile_step", "--repeats", "3"),
        ("-m", "bench.profile_step", "--steps", "30000"),
    ),
)


@dataclass(frozen=True)
class Outcome:
    benchmark: Benchmark
    returncode: int
    seconds: float
    stdout: list[str]
    stderr: list[str]


# ---------------------------------------------------------------------------------------------
# Running


def run_benchmark(benchmark: Benchmark, quick: bool) -> Outcome:
    """Run one benchmark from the repository root, echoing its output line by line."""
    print(f"\n>>> {benchmark.shown(quick)}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        benchmark.argv(quick),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env=unbuffered_environment(),
    )
    assert process.stdout is not None and process.stderr is not None
    stderr: list[str] = []
    # stderr is drained by a thread so neither pipe can fill up and stall the child.
    errors = threading.Thread(target=_tee, args=(process.stderr, sys.stderr, stderr), daemon=True)
    errors.start()
    stdout: list[str] = []
    _tee(process.stdout, sys.stdout, stdout)
    returncode = process.wait()
    errors.join()
    return Outcome(benchmark, returncode, time.perf_counter() - started, stdout, stderr)


def _tee(source: IO[str], sink: IO[str], lines: list[str]) -> None:
    for line in source:
        sink.write(line)
        sink.flush()
        lines.append(line.rstrip("\n"))


def unbuffered_environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def git_commit(root: Path = ROOT, ignore: Sequence[Path] = ()) -> str:
    """``git rev-parse --short HEAD``, plus ``+dirty`` when the working tree differs from it.

    ``ignore``: paths whose changes do not count (the results file itself, rewritten by every
    run). "unknown" outside a git checkout.
    """
    inside = [p.resolve() for p in ignore if p.resolve().is_relative_to(root.resolve())]
    excludes = [f":(exclude){p.relative_to(root.resolve())}" for p in inside]
    try:
        commit = _git(root, "rev-parse", "--short", "HEAD")
        changes = _git(root, "status", "--porcelain", "--", ".", *excludes)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if changes else "")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.strip()


# ---------------------------------------------------------------------------------------------
# Writing


def header_lines(
    quick: bool, commit: str, start: dict[str, str], end: dict[str, str], seconds: float
) -> list[str]:
    if quick:
        kind = "`make bench-quick` (`python -m bench.results --quick`)"
    else:
        kind = "`make bench` (`python -m bench.results`)"
    title = "Benchmark results, quick run" if quick else "Benchmark results"
    lines = [
        f"# {title}",
        "",
        f"Written by {kind} from the benchmarks' own output; do not edit by hand, run it again.",
        "What each benchmark measures and how to read it: [benchmarks.md](benchmarks.md).",
    ]
    if quick:
        lines += [
            "",
            "A quick run: one repeat and shorter runs, to check the tools, not figures to quote;",
            "the full run writes [benchmark-results.md](benchmark-results.md).",
        ]
    return [
        *lines,
        "",
        f"- date: {start['date']} (took {seconds / 60:.1f} min)",
        f"- commit: `{commit}`",
        f"- machine: {start['cpu']}",
        f"- load average (1, 5, 15 min): {start['load']} at the start, {end['load']} at the end",
        f"- versions: {start['python']}; {start['versions']}",
        f"- thread variables: {start['threads']}",
        "",
    ]


def section_lines(outcome: Outcome, quick: bool) -> list[str]:
    """A heading, the command, then the output: tables as they are, other lines as text."""
    b = outcome.benchmark
    status = "ok" if outcome.returncode == 0 else f"FAILED, exit code {outcome.returncode}"
    lines = [
        f"## {b.name}",
        "",
        f"`{b.shown(quick)}` ({outcome.seconds:.0f} s, {status}): {b.measures}.",
        "",
    ]
    for is_table, block in blocks(outcome.stdout):
        lines += block if is_table else ["```text", *block, "```"]
        lines.append("")
    if outcome.returncode != 0 and outcome.stderr:
        lines += ["End of stderr:", "", "```text", *outcome.stderr[-STDERR_TAIL_LINES:], "```", ""]
    return lines


def blocks(output: Sequence[str]) -> list[tuple[bool, list[str]]]:
    """Split printed lines into runs of Markdown table rows and runs of other non-blank lines."""
    result: list[tuple[bool, list[str]]] = []
    for line in output:
        if not line.strip():
            if result and not result[-1][0]:
                result.append((False, []))  # a blank line ends a text block
            continue
        is_table = line.lstrip().startswith("|")
        if not result or result[-1][0] != is_table:
            result.append((is_table, []))
        result[-1][1].append(line)
    return [(t, block) for t, block in result if block]


def run_all(benchmarks: Sequence[Benchmark], out: Path, quick: bool = False) -> int:
    """Run ``benchmarks`` in order, write ``out``; 0 if every one succeeded, else 1."""
    commit = git_commit(ignore=[out])
    start = machine_facts()
    started = time.perf_counter()
    outcomes = [run_benchmark(b, quick) for b in benchmarks]
    seconds = time.perf_counter() - started
    lines = header_lines(quick, commit, start, machine_facts(), seconds)
    for outcome in outcomes:
        lines += section_lines(outcome, quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines).rstrip("\n") + "\n")
    failed = [o.benchmark.name for o in outcomes if o.returncode != 0]
    print(f"\n>>> wrote {out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, shorter runs")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"results file (default: {FULL_RESULTS.relative_to(ROOT)}, with --quick "
        f"{QUICK_RESULTS.relative_to(ROOT)})",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the commands, run nothing")
    args = parser.parse_args(argv)
    out = args.out or (QUICK_RESULTS if args.quick else FULL_RESULTS)
    if args.dry_run:
        for b in BENCHMARKS:
            print(b.shown(args.quick))
        print(f"# would write {out}")
        return 0
    return run_all(BENCHMARKS, out, args.quick)


if __name__ == "__main__":
    sys.exit(main())
