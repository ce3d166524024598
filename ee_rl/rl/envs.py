"""Atari environments with the ZTW paper's preprocessing (appendix A.2), as a Stable-Baselines3 ``VecEnv``.

Frames come from ale-py's C++ vector environment (``ale_py.vector_env.AtariVectorEnv``), which does frame
skip 4 with a max-pool over the last two frames, 84×84 grayscale, a 4-frame stack (channel-first), FIRE on
reset and no-op starts in native threads — about 2× faster than SB3's Python wrapper chain on this CPU. What
the paper specifies on top of that is done here, once, in numpy:

* sticky actions at the agent-step level ("at every step the agent has a 0.1 probability of taking the
  previous action"); ALE's own per-frame ``repeat_action_probability`` is forced to 0 so it never stacks;
* training mode: the episode terminates on life loss (the game itself continues, as in SB3's
  ``EpisodicLifeEnv``) and the reward is sign-clipped;
* evaluation mode: full games and raw scores.

Every finished game reports ``info["episode"] = {"r", "l", "t"}`` with its raw score (as SB3's ``Monitor``
does), so SB3's episode statistics work unchanged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn

from ee_rl.errors import UserError
from ee_rl.rl.games import rom_id

#: ALE's cap on an episode: 108,000 emulator frames (30 minutes of play), the common Atari protocol.
MAX_EPISODE_FRAMES = 108_000


def native_vector_env(
    game: str,
    n_envs: int,
    *,
    num_threads: int,
    noop_max: int,
    frame_skip: int,
    frame_stack: int,
    size: tuple[int, int],
    grayscale: bool,
    max_pool: bool,
    max_episode_frames: int,
) -> Any:
    """ale-py's native ``AtariVectorEnv`` as every emulator of ee_rl runs it.

    No ALE-level sticky actions, life-loss terminals or reward clipping (those are applied in numpy by
    :class:`AtariVecEnv`, once); same-step autoreset; FIRE on reset; up to ``noop_max`` no-op starts. Two
    emulators built here with the same game, seed and frame skip and stepped with the same actions stay
    identical, whatever their ``size``, ``grayscale``, ``frame_stack`` and ``max_pool`` (what
    :mod:`ee_rl.rl.video` relies on).
    """
    from ale_py.vector_env import AtariVectorEnv
    from gymnasium.vector import AutoresetMode

    return AtariVectorEnv(
        game,
        n_envs,
        num_threads=num_threads,
        repeat_action_probability=0.0,  # sticky actions are applied once, by StickyActions
        autoreset_mode=AutoresetMode.SAME_STEP,
        max_num_frames_per_episode=max_episode_frames,
        img_height=size[0],
        img_width=size[1],
        grayscale=grayscale,
        stack_num=frame_stack,
        frameskip=frame_skip,
        maxpool=max_pool,
        noop_max=noop_max,
        episodic_life=False,  # life loss is turned into a terminal by AtariVecEnv, in training mode only
        life_loss_info=False,
        reward_clipping=False,  # raw scores are needed for episode statistics
        use_fire_reset=True,
    )


class StickyActions:
    """Agent-level sticky actions: with probability ``p`` each env repeats its previously executed action.

    Mirrors SB3's ``StickyActionEnv`` but vectorised; the previous action of an env is reset to NOOP (0)
    when its game restarts.
    """

    def __init__(self, n_envs: int, p: float, seed: int | None = None) -> None:
        if not 0.0 <= p < 1.0:
            raise UserError(f"sticky action probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.previous = np.zeros(n_envs, dtype=np.int64)
        self.rng = np.random.default_rng(seed)

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        """Return the actions actually executed and remember them."""
        actions = np.asarray(actions, dtype=np.int64).reshape(-1)
        if self.p > 0.0:
            repeat = self.rng.random(actions.shape[0]) < self.p
            actions = np.where(repeat, self.previous, actions)
        # A private copy: with p = 0 ``actions`` may be the caller's own array (asarray does not copy int64), and
        # reset() zeroes ``previous`` in place, which would rewrite the caller's actions of finished games (e.g.
        # the actions SB3's PPO stores in its rollout buffer right after env.step).
        self.previous = actions.copy()
        return actions

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Forget the previous action (→ NOOP) of the envs in ``mask`` (all envs if None)."""
        if mask is None:
            self.previous[:] = 0
        else:
            self.previous[mask] = 0


class AtariVecEnv(VecEnv):
    """``n_envs`` Atari games stepped together, with the paper's wrappers; observations uint8 (n, 4, 84, 84).

    Args:
        env: a game name (``Pong``) or Atari id (``ALE/Pong-v5``).
        n_envs: number of parallel games.
        training: True → terminal on life loss and sign-clipped rewards; False → full games, raw scores.
        sticky_prob: agent-level sticky action probability (paper: 0.1).
        seed: base seed; env ``i`` uses ``seed + i``. The sticky-action RNG is seeded from it too.
        noop_max: up to this many no-ops at the start of each game.
        frame_skip, frame_stack, screen_size: the usual Atari preprocessing knobs (paper: 4, 4, 84).
        max_pool: max-pool the last two frames of each skip (paper: yes).
        num_threads: native threads stepping the emulators (default: the number of CPU cores, ≤ n_envs).
        max_episode_frames: emulator frames after which a game is cut (truncated); ALE's 108,000 by default.
    """

    def __init__(
        self,
        env: str,
        n_envs: int = 8,
        *,
        training: bool = True,
        sticky_prob: float = 0.1,
        seed: int | None = 0,
        noop_max: int = 30,
        frame_skip: int = 4,
        frame_stack: int = 4,
        screen_size: int = 84,
        max_pool: bool = True,
        num_threads: int | None = None,
        max_episode_frames: int = MAX_EPISODE_FRAMES,
    ) -> None:
        if n_envs < 1:
            raise UserError(f"the number of environments must be a positive integer, got {n_envs}")
        self.game = rom_id(env)
        self.training = training
        self._ale = native_vector_env(
            self.game,
            n_envs,
            num_threads=num_threads or min(n_envs, os.cpu_count() or 1),
            noop_max=noop_max,
            frame_skip=frame_skip,
            frame_stack=frame_stack,
            size=(screen_size, screen_size),
            grayscale=True,
            max_pool=max_pool,
            max_episode_frames=max_episode_frames,
        )
        self.action_meanings = [a.name for a in self._ale.ale.get_action_set()]
        observation_space = spaces.Box(0, 255, (frame_stack, screen_size, screen_size), dtype=np.uint8)
        action_space = spaces.Discrete(len(self.action_meanings))
        super().__init__(n_envs, observation_space, action_space)
        self.sticky = StickyActions(n_envs, sticky_prob, seed)
        self.base_seed = seed
        if seed is not None:
            self.seed(seed)
        self._actions = np.zeros(n_envs, dtype=np.int64)
        self._lives = np.zeros(n_envs, dtype=np.int64)
        self._episode_return = np.zeros(n_envs, dtype=np.float64)
        self._episode_length = np.zeros(n_envs, dtype=np.int64)
        self._start_time = time.time()

    # --- VecEnv interface -------------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        seed = self._seeds[0]
        obs, info = self._ale.reset(seed=int(seed) if seed is not None else None)
        if seed is not None:
            self.sticky.rng = np.random.default_rng(seed)
        self._reset_seeds()
        self.sticky.reset()
        self._lives = np.asarray(info["lives"], dtype=np.int64).copy()
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = self.sticky(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, raw_reward, terminated, truncated, info = self._ale.step(self._actions)
        raw_reward = np.asarray(raw_reward, dtype=np.float64)
        game_over = np.logical_or(terminated, truncated)
        lives = np.asarray(info["lives"], dtype=np.int64)
        done = game_over.copy()
        if self.training:
            done |= lives < self._lives  # a life lost ends the training episode, not the game
        self._lives = lives.copy()
        self._episode_return += raw_reward
        self._episode_length += 1
        reward = np.sign(raw_reward) if self.training else raw_reward

        infos: list[dict[str, Any]] = [{"lives": int(lives[i])} for i in range(self.num_envs)]
        for i in np.flatnonzero(done):
            if game_over[i]:
                infos[i]["terminal_observation"] = info["final_obs"][i]
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                infos[i]["episode"] = {
                    "r": float(self._episode_return[i]),
                    "l": int(self._episode_length[i]),
                    "t": round(time.time() - self._start_time, 6),
                }
                self._episode_return[i] = 0.0
                self._episode_length[i] = 0
            else:  # life lost: the game continues from the current frame
                infos[i]["terminal_observation"] = obs[i]
                infos[i]["TimeLimit.truncated"] = False
        if game_over.any():
            self.sticky.reset(game_over)
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        self._ale.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        if attr_name == "render_mode":
            return [None for _ in self._get_indices(indices)]
        if hasattr(self, attr_name):
            return [getattr(self, attr_name) for _ in self._get_indices(indices)]
        raise AttributeError(f"AtariVecEnv has no attribute '{attr_name}'")

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        raise NotImplementedError("AtariVecEnv runs its games natively; it has no per-env Python methods")

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        # Every game's raw score and length come back in info["episode"], as SB3's Monitor reports them; say so,
        # so that SB3 (evaluate_policy) trusts those scores instead of warning.
        from stable_baselines3.common.monitor import Monitor

        return [issubclass(Monitor, wrapper_class) for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        raise NotImplementedError("use ee_rl.rl.video for RGB frames")


def make_atari_env(
    env: str,
    n_envs: int = 8,
    *,
    training: bool = True,
    sticky_prob: float = 0.1,
    seed: int | None = 0,
    **kwargs: Any,
) -> AtariVecEnv:
    """Build the paper's Atari environment: ``training=True`` for PPO/BC, ``False`` for full-game evaluation."""
    return AtariVecEnv(env, n_envs, training=training, sticky_prob=sticky_prob, seed=seed, **kwargs)
