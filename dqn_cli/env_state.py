"""Snapshots of live gymnasium envs, so a resumed run continues the very same episodes.

An env's state (physics, step counter of its TimeLimit, its random generator) lives in Python
objects, and pickle is the only general way to capture it. Unpickling runs whatever callables
the file names, so a snapshot is never unpickled freely: :class:`_EnvUnpickler` resolves only
the classes of a freshly made env of the same config (its wrapper chain, the plain objects its
layers hold, and spaces) plus the numpy array and random-generator constructors. Anything else
in the file is refused, which keeps loading a checkpoint as safe as
``torch.load(weights_only=True)``.

An ale-py game (the innermost env of an ``ALE/*`` chain) pickles its constructor arguments,
not the emulator: its wrappers are pickled as usual, and the game itself goes into the pickle
as a persistent id holding its plain-data state (pixel_envs.atari_state: bytes, names, ints).
On restore that state is put into the game of a freshly made env of the same config, and the
unpickled wrappers are set on it.

Other envs that cannot be pickled faithfully (Box2D and MuJoCo envs pickle their constructor
arguments, not their state; simulators with native handles do not pickle at all), and envs
whose state holds objects the allow-list refuses, have no snapshot: their episodes restart on
resume, with a warning in train.log.
"""

from __future__ import annotations

import io
import logging
import pickle
from typing import Any

import gymnasium as gym
from gymnasium import spaces
from gymnasium.utils import EzPickle

from dqn_cli.ale_vector import AleVectorEnv
from dqn_cli.config import EnvConfig
from dqn_cli.envs import VectorEnv, make_env
from dqn_cli.pixel_envs import atari_state, is_atari_game, restore_atari_state

log = logging.getLogger(__name__)

# numpy's own reconstruction helpers: arrays, scalars, dtypes and random generators.
_NUMPY_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._generator", "Generator"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._mt19937", "MT19937"),  # inside a legacy RandomState (MinAtar's games)
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("collections", "deque"),  # FrameStackObservation's frames
}
# The persistent id that stands for an ale-py game in a snapshot: (tag, atari_state(game)).
_ATARI_GAME = "atari_game"


def _allowed_classes(env: gym.Env) -> set[tuple[str, str]]:
    allowed = set(_NUMPY_ALLOWED)
    layer: Any = env
    while not is_atari_game(layer):  # a game is restored from its state, never unpickled
        allowed.add((type(layer).__module__, type(layer).__qualname__))
        # The classes of the layer's own state (NormalizeObservation's RunningMeanStd, a
        # custom env's helper objects): a fresh env of this config made them itself.
        _add_state_classes(vars(layer), allowed, depth=2)
        if not isinstance(layer, gym.Wrapper):
            break
        layer = layer.env
    for space_type in (
        spaces.Box,
        spaces.Discrete,
        spaces.MultiBinary,
        spaces.MultiDiscrete,
        spaces.Tuple,
        spaces.Dict,
    ):
        allowed.add((space_type.__module__, space_type.__qualname__))
    for spec_type in (gym.envs.registration.EnvSpec, gym.envs.registration.WrapperSpec):
        allowed.add((spec_type.__module__, spec_type.__qualname__))
    for dtype in (
        "Float32DType",
        "Float64DType",
        "Int64DType",
        "Int32DType",
        "UInt8DType",
        "BoolDType",
    ):
        allowed.add(("numpy.dtypes", dtype))
    return allowed


def _add_state_classes(value: Any, allowed: set[tuple[str, str]], depth: int) -> None:
    """Classes of plain objects held in ``value`` (attributes, lists, dicts), ``depth`` deep.

    Only classes whose instances pickle as state (a ``__dict__``, no custom reduce) are
    added: those unpickle by ``cls.__new__`` plus setting attributes, calling no code of theirs.
    """
    items: list[Any]
    if isinstance(value, dict):
        items = list(value.values())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        cls = type(value)
        if not hasattr(value, "__dict__") or cls.__module__ == "builtins" or callable(value):
            return
        if is_atari_game(value):  # held by the innermost wrapper; restored, never unpickled
            return
        if cls.__reduce_ex__ is not object.__reduce_ex__ or cls.__reduce__ is not object.__reduce__:
            return
        allowed.add((cls.__module__, cls.__qualname__))
        items = list(vars(value).values())
    if depth > 0:
        for item in items:
            _add_state_classes(item, allowed, depth - 1)


class _EnvPickler(pickle.Pickler):
    """Pickles an env chain, its ale-py game (if any) as the game's plain-data state."""

    def persistent_id(self, obj: Any) -> Any:
        return (_ATARI_GAME, atari_state(obj)) if is_atari_game(obj) else None


class _EnvUnpickler(pickle.Unpickler):
    """Unpickles an env chain through the allow-list; a game's state goes into ``game``."""

    def __init__(self, data: bytes, allowed: set[tuple[str, str]], game: gym.Env | None) -> None:
        super().__init__(io.BytesIO(data))
        self.allowed = allowed
        self.game = game

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"env snapshot refers to {module}.{name}, not allowed")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if self.game is None or not (isinstance(pid, tuple) and pid[:1] == (_ATARI_GAME,)):
            raise pickle.UnpicklingError("env snapshot holds a game state this env has no game for")
        restore_atari_state(self.game, pid[1] if len(pid) == 2 else None)
        return self.game


class _AllowListCheck(_EnvUnpickler):
    """Unpickles a snapshot just taken, to see that the allow-list accepts it; a game's state
    (plain data, taken from the live game) is left aside."""

    def persistent_load(self, pid: Any) -> Any:
        return None


def _pickled(env: gym.Env) -> bytes:
    buffer = io.BytesIO()
    _EnvPickler(buffer).dump(env)
    return buffer.getvalue()


def _load(data: bytes, fresh: gym.Env) -> gym.Env:
    """The env pickled in ``data``; an Atari snapshot's game is ``fresh``'s, put in its state."""
    game = fresh.unwrapped if is_atari_game(fresh.unwrapped) else None
    env = _EnvUnpickler(data, _allowed_classes(fresh), game).load()
    if not isinstance(env, gym.Env) or (game is not None and env.unwrapped is not game):
        raise pickle.UnpicklingError("env snapshot does not hold an env of this run's config")
    return env


def snapshot_envs(envs: VectorEnv) -> list[bytes] | None:
    """Pickled sub-envs, or None when this env cannot be pickled faithfully or would not be
    accepted back (its state holds classes the allow-list does not know): then episodes
    restart on resume, as for Box2D envs."""
    if isinstance(envs, AleVectorEnv):
        return None  # its games live in C++, out of pickle's reach
    if any(
        isinstance(env.unwrapped, EzPickle) and not is_atari_game(env.unwrapped)
        for env in envs.envs
    ):
        # EzPickle envs (Box2D, MuJoCo) pickle their constructor arguments, not their state:
        # unpickling would build a fresh env, silently starting new episodes.
        return None
    try:
        snapshots = [_pickled(env) for env in envs.envs]
    except Exception:
        return None
    allowed = _allowed_classes(envs.envs[0])
    try:
        for data in snapshots:
            _AllowListCheck(data, allowed, game=None).load()
    except Exception as exc:
        log.warning("env state cannot be saved for exact resume (%s): episodes restart", exc)
        return None
    return snapshots


def restore_envs(envs: VectorEnv, snapshots: list[bytes], config: EnvConfig) -> None:
    """Put the snapshotted sub-envs in place of ``envs``' own; raises UnpicklingError if unsafe
    and ValueError if a game state is refused, leaving ``envs`` as they were."""
    if isinstance(envs, AleVectorEnv):
        raise ValueError("ale-py's vector env (env.vector) takes no env snapshot")
    if len(snapshots) != envs.num_envs:
        raise ValueError(f"snapshot holds {len(snapshots)} envs, the run has {envs.num_envs}")
    restored: list[gym.Env] = []
    try:
        for data in snapshots:
            fresh = make_env(config)
            try:
                restored.append(_load(data, fresh))
            except BaseException:
                fresh.close()
                raise
            if not is_atari_game(fresh.unwrapped):
                fresh.close()  # only its classes were needed; an Atari game lives on restored
    except BaseException:
        for env in restored:
            env.close()
        raise
    for old in envs.envs:
        old.close()
    envs.envs = restored
