"""``dqn-eval``: evaluate saved checkpoints, run dirs and whole sweeps."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import torch
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from dqn_cli.checkpoint import CheckpointError
from dqn_cli.checkpoint_eval import (
    CheckpointResult,
    EvalTarget,
    EvalTargetError,
    LoadedCheckpoint,
    VideoError,
    checkpoint_name,
    evaluate_checkpoint,
    load_for_eval,
    require_video_extra,
    resolve_targets,
)
from dqn_cli.config import MAX_EVAL_EPISODES, MAX_SEED
from dqn_cli.envs import EnvError
from dqn_cli.errors import one_line

PROG = "dqn-eval"

EXAMPLES = """\
examples:
  dqn-eval outputs/2026-11-21/10-00-00             a run dir: its checkpoints/best.pt
  dqn-eval outputs/2026-11-21/10-00-00 --last      ... its checkpoints/last.pt
  dqn-eval path/to/last.pt --episodes 50 --seed 7  a checkpoint file, copied anywhere
  dqn-eval multirun/2026-11-21/10-00-00            a sweep dir: every run in it, one row each
  dqn-eval RUN --json                              one JSON object per checkpoint per line
  dqn-eval RUN --video videos/                     mp4 files of the episodes (video extra)
  dqn-eval RUN --epsilon 0.05                      evaluation epsilon (default greedy)

Episode i is seeded SEED + i. Training evaluated with seeds from seed + 1000000, so for a
greedy seed=0 run `--seed 1000000 --episodes <eval.episodes>` repeats the evaluation that
chose its best.pt.
"""


class UsageError(ValueError):
    """A bad command-line value that argparse cannot check alone; ``str()`` is one line."""


# Errors the user can fix: one line on stderr, exit code 2, no traceback.
USER_ERRORS = (CheckpointError, EnvError, EvalTargetError, VideoError, UsageError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the usage block first; one line is easier to read and to grep.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _episodes(text: str) -> int:
    value = _int(text)
    if not 1 <= value <= MAX_EVAL_EPISODES:
        raise argparse.ArgumentTypeError(f"must be in [1, {MAX_EVAL_EPISODES}], got {value}")
    return value


def _seed(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_SEED}], got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Evaluate saved dqn-train checkpoints: a .pt file, a run dir or a sweep dir.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "path",
        type=Path,
        metavar="PATH",
        help="a checkpoint file, a run dir (outputs/DATE/TIME) or a sweep dir (multirun/DATE/TIME)",
    )
    parser.add_argument(
        "--last",
        action="store_true",
        help="evaluate checkpoints/last.pt of run dirs instead of checkpoints/best.pt",
    )
    parser.add_argument(
        "--episodes",
        type=_episodes,
        default=20,
        metavar="N",
        help="episodes per checkpoint (default 20)",
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=0,
        metavar="S",
        help="episode i is seeded SEED + i (default 0)",
    )
    parser.add_argument(
        "--epsilon",
        type=_probability,
        default=0.0,
        metavar="E",
        help="probability of a random action (default 0: greedy)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per checkpoint per line instead of the table",
    )
    parser.add_argument(
        "--video",
        type=Path,
        metavar="DIR",
        help="also write every episode as an mp4 into DIR (needs the video extra)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "auto", "cuda"],
        default="cpu",
        help="where the network runs (default cpu: fastest for these small MLPs)",
    )
    return parser


def _device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    # Imported here: dqn_cli.training loads TensorBoard, which the default path does not need.
    from dqn_cli.training import DeviceError, resolve_device

    try:
        return resolve_device(name)
    except DeviceError:
        raise UsageError(
            f"--device {name}: no CUDA device is available; use --device cpu or --device auto"
        ) from None


def results_table(
    rows: Sequence[tuple[EvalTarget, LoadedCheckpoint, CheckpointResult]],
    args: argparse.Namespace,
) -> Table:
    env_ids = sorted({ckpt.env_id for _, ckpt, _ in rows})
    one_env = len(env_ids) == 1
    caption = []
    if args.path.is_dir():
        each = " of each run" if len(rows) > 1 else ""
        caption.append(f"checkpoints/{checkpoint_name(args.last)}{each}")
    caption.append(f"episodes seeded {args.seed}..{args.seed + args.episodes - 1}")
    caption.append("greedy" if args.epsilon == 0 else f"epsilon {args.epsilon:g}")
    table = Table(
        title=f"{PROG}: {env_ids[0]}" if one_env else PROG,
        caption=", ".join(caption),
    )
    # fold, not the default ellipsis: a cut-off label would hide which run a row is.
    table.add_column("run", overflow="fold", min_width=8)
    if not one_env:
        table.add_column("env", overflow="fold")
    for name in ("step", "episodes", "return", "min", "max", "length"):
        table.add_column(name, justify="right")
    for target, ckpt, r in rows:
        # Text, not str: a label such as model.hidden=[32] must not be read as rich markup.
        cells: list[Text | str] = [Text(target.label)]
        if not one_env:
            cells.append(Text(ckpt.env_id))
        cells += [
            f"{r.step:,}",
            str(r.episodes),
            f"{r.return_mean:.1f} +- {r.return_std:.1f}",
            f"{r.return_min:.1f}",
            f"{r.return_max:.1f}",
            f"{r.length_mean:.1f}",
        ]
        table.add_row(*cells)
    return table


def run(args: argparse.Namespace) -> int:
    device = _device(args.device)
    if args.video is not None:
        require_video_extra()  # before any work, not after the first checkpoint
        # Frames are drawn off-screen; without this, pygame's display init prints an error
        # line on machines with no display session.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    resolved = resolve_targets(args.path, args.last)
    for skipped in resolved.skipped:
        print(
            f"{PROG}: warning: skipping {skipped}: no checkpoints/{checkpoint_name(args.last)}",
            file=sys.stderr,
        )
    # Read and check every checkpoint first, so a bad one fails before minutes of episodes.
    loaded = [load_for_eval(target.checkpoint) for target in resolved.targets]
    # One thread is fastest for a batch of at most 32 observations through a small MLP.
    torch.set_num_threads(1)

    rows = []
    stderr = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
        # Left alone, rich would send print() (the JSON lines) to its own console: stderr.
        redirect_stdout=False,
        redirect_stderr=False,
    )
    with progress:
        task = progress.add_task("evaluating", total=len(loaded))
        for target, ckpt in zip(resolved.targets, loaded, strict=True):
            progress.update(task, description=f"evaluating {target.label}")
            video_dir = None
            if args.video is not None:
                video_dir = args.video / target.name if target.name else args.video
            result = evaluate_checkpoint(
                ckpt, args.episodes, args.seed, args.epsilon, device, video_dir
            )
            if args.json:
                print(json.dumps(result.to_dict()), flush=True)
            rows.append((target, ckpt, result))
            progress.advance(task)
    if not args.json:
        console = Console()
        table = results_table(rows, args)
        if not console.is_terminal:
            # Piped or redirected: no screen to fit, so each row stays on one line.
            unbounded = console.options.update_width(10_000)
            natural = Measurement.get(console, unbounded, table).maximum
            console.width = max(console.width, natural)
        console.print(table)
    if args.video is not None:
        print(f"{PROG}: videos written to {args.video}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except USER_ERRORS as exc:
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
