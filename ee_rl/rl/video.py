"""Evaluation videos of an early-exit agent: the real game screen with an overlay of which exit answered.

The agent plays on the paper's 84×84 grayscale frame stacks (:func:`ee_rl.rl.envs.make_atari_env`), which are no
good to watch. The colour screen of the *same* game state comes from a second ALE emulator stepped in lockstep
(:class:`LockstepScreen`): same ROM, seed, no-op starts, frame skip and executed actions, so the emulators stay
identical (the tests check it frame by frame). Sticky actions are drawn once here and the executed action is sent
to both emulators.

Every video frame is one decision: the screen upscaled, and a panel with the exit that answered, its confidence,
and the running share of compute saved; a summary card ends the video. Written with imageio (ffmpeg from the
``imageio-ffmpeg`` wheel for ``.mp4``, Pillow for ``.gif``), atomically.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ee_rl.core import ExitRule
from ee_rl.errors import UserError
from ee_rl.io import atomic_path
from ee_rl.rl.envs import MAX_EPISODE_FRAMES, StickyActions, make_atari_env, native_vector_env
from ee_rl.rl.games import rom_id
from ee_rl.rl.policy import EarlyExitPolicy
from ee_rl.rl.sweep.play import DecisionTally, expert_actions_for

#: Native Atari screen (height, width).
ATARI_SCREEN = (210, 160)
VIDEO_SUFFIXES = (".mp4", ".gif")
#: Exit colours (RGB): IC 1, IC 2, ... then the expert's own head.
EXIT_COLOURS = ((46, 204, 113), (241, 196, 15), (230, 126, 34), (155, 89, 182))
EXPERT_COLOUR = (231, 76, 60)
PANEL_HEIGHT = 90
PANEL_BACKGROUND = (24, 24, 28)
TEXT_COLOUR = (235, 235, 235)


# --- the game screen ------------------------------------------------------------------------------------------


class LockstepScreen:
    """A second emulator of the same game, stepped with the same executed actions: the agent's game, in colour.

    Matches :class:`ee_rl.rl.envs.AtariVecEnv` (no ALE-level sticky actions, no-op starts, FIRE on reset, frame
    skip, episode cap, same-step autoreset), so after ``reset`` with the same seed and the same executed actions
    both emulators are in the same state. By default it returns the last emulator frame of each step in colour at
    the native 210×160; ``grayscale``, ``size``, ``stack`` and ``max_pool`` reproduce the agent's observation
    instead (to check the lockstep). ``max_episode_frames`` must equal the agent env's cap (ALE's 108,000).
    """

    def __init__(
        self,
        env: str,
        n_envs: int = 1,
        *,
        noop_max: int = 30,
        frame_skip: int = 4,
        grayscale: bool = False,
        size: tuple[int, int] = ATARI_SCREEN,
        stack: int = 1,
        max_pool: bool = False,
        max_episode_frames: int = MAX_EPISODE_FRAMES,
    ) -> None:
        self.grayscale = grayscale
        self.stack = stack
        self._ale = native_vector_env(
            rom_id(env),
            n_envs,
            num_threads=1,
            noop_max=noop_max,
            frame_skip=frame_skip,
            frame_stack=stack,
            size=size,
            grayscale=grayscale,
            max_pool=max_pool,
            max_episode_frames=max_episode_frames,
        )

    def _frames(self, obs: np.ndarray) -> np.ndarray:
        # Colour: (n, stack, H, W, 3); the stack axis is dropped when it has one frame.
        return obs[:, 0] if self.stack == 1 else obs

    def reset(self, seed: int | None) -> np.ndarray:
        """Start new games (env ``i`` seeded ``seed + i``, as the agent's env); return the screens."""
        obs, _ = self._ale.reset(seed=seed)
        return self._frames(obs)

    def step(self, executed_actions: np.ndarray) -> np.ndarray:
        """Step every game with the actions the agent's env executed; return the new screens."""
        obs, *_ = self._ale.step(np.asarray(executed_actions, dtype=np.int64))
        return self._frames(obs)

    def close(self) -> None:
        """Release the emulators."""
        self._ale.close()


# --- drawing --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DecisionOverlay:
    """What the panel under the screen shows for one decision.

    Attributes:
        exit_index: 0-based exit that answered (``num_ics`` = the expert's own head).
        num_ics: M, the number of internal exits.
        confidence: the answering exit's probability of the chosen action.
        compute_saved: running share of the expert's FLOPs saved so far (0.3 = 30 %).
        score: raw return so far.
        decision: 0-based decision number.
        exit_rates: running share of decisions answered at each exit (the expert's head last), or empty.
    """

    exit_index: int
    num_ics: int
    confidence: float
    compute_saved: float
    score: float
    decision: int
    exit_rates: tuple[float, ...] = ()


def exit_name(exit_index: int, num_ics: int) -> str:
    """``IC 1`` .. ``IC M``, or ``expert`` for the final head."""
    return "expert" if exit_index >= num_ics else f"IC {exit_index + 1}"


def exit_colour(exit_index: int, num_ics: int) -> tuple[int, int, int]:
    """The colour of an exit in the overlay."""
    return EXPERT_COLOUR if exit_index >= num_ics else EXIT_COLOURS[exit_index % len(EXIT_COLOURS)]


def _font(size: int):  # noqa: ANN202 - PIL font type
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of an (H, W, 3) frame by an integer factor (crisp pixels)."""
    return np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


def overlay_frame(screen: np.ndarray, info: DecisionOverlay, scale: int = 3) -> np.ndarray:
    """The screen upscaled by ``scale`` with a panel of :data:`PANEL_HEIGHT` px below; (H·s + 90, W·s, 3) uint8."""
    from PIL import Image, ImageDraw

    if screen.ndim != 3 or screen.shape[2] != 3 or screen.dtype != np.uint8:
        raise ValueError(f"screen must be an (H, W, 3) uint8 RGB frame, got {screen.dtype} {screen.shape}")
    big = upscale(screen, scale)
    height, width = big.shape[:2]
    canvas = np.empty((height + PANEL_HEIGHT, width, 3), dtype=np.uint8)
    canvas[:height] = big
    canvas[height:] = PANEL_BACKGROUND
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    colour = exit_colour(info.exit_index, info.num_ics)
    draw.rectangle([0, height, width - 1, height + 4], fill=colour)  # colour strip: which exit answered
    font, small = _font(22), _font(16)
    draw.text((12, height + 12), f"exit: {exit_name(info.exit_index, info.num_ics)}", fill=colour, font=font)
    draw.text((width // 2, height + 12), f"confidence {info.confidence:.2f}", fill=TEXT_COLOUR, font=font)
    draw.text((12, height + 46), f"compute saved {100 * info.compute_saved:5.1f} %", fill=TEXT_COLOUR, font=small)
    draw.text(
        (width // 2, height + 46), f"return {info.score:+g} · step {info.decision + 1}", fill=TEXT_COLOUR, font=small
    )
    # One box per exit (the answering one filled) with the running share of decisions it answered.
    step = (width - 12) // (info.num_ics + 1)
    for m in range(info.num_ics + 1):
        x0, y0 = 12 + m * step, height + 70
        colour_m = exit_colour(m, info.num_ics)
        fill = colour_m if m == info.exit_index else None
        draw.rectangle([x0, y0 + 2, x0 + 14, y0 + 12], outline=colour_m, fill=fill)
        share = f": {100 * info.exit_rates[m]:.0f} %" if m < len(info.exit_rates) else ""
        draw.text((x0 + 20, y0), f"{exit_name(m, info.num_ics)}{share}", fill=TEXT_COLOUR, font=_font(14))
    return np.asarray(image)


def text_card(lines: Iterable[str], size: tuple[int, int]) -> np.ndarray:
    """A dark (H, W, 3) uint8 card with ``lines`` of text (the first one larger): the video's summary."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size[1], size[0]), PANEL_BACKGROUND)
    draw = ImageDraw.Draw(image)
    y = 30
    for i, line in enumerate(lines):
        font = _font(26 if i == 0 else 18)
        draw.text((24, y), line, fill=TEXT_COLOUR, font=font)
        y += 44 if i == 0 else 30
    return np.asarray(image)


# --- writing --------------------------------------------------------------------------------------------------


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float = 30.0) -> int:
    """Stream ``frames`` ((H, W, 3) uint8, all the same size, H and W even) to an ``.mp4`` or ``.gif``, atomically.

    ``.mp4``: H.264 via the ffmpeg binary of ``imageio-ffmpeg`` (no system ffmpeg needed), frames written as they
    come. ``.gif``: Pillow, which keeps the frames in memory until the end (for short clips). Returns the number of
    frames written. A crash leaves any previous file at ``path`` untouched.
    """
    import imageio.v2 as imageio

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise UserError(f"video file must end in {' or '.join(VIDEO_SUFFIXES)}, got {path.name}")
    if not fps > 0:
        raise UserError(f"fps must be positive, got {fps}")
    count = 0
    # The temp file keeps the video's suffix: ffmpeg picks the container from the file name.
    with atomic_path(path, suffix=suffix) as tmp:
        if suffix == ".mp4":
            writer = imageio.get_writer(
                str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=6, pixelformat="yuv420p",
                macro_block_size=1, ffmpeg_log_level="error",
            )
        else:
            writer = imageio.get_writer(str(tmp), format="GIF", mode="I", duration=1000.0 / fps, loop=0)
        shape = None
        try:
            for frame in frames:
                frame = np.asarray(frame)
                if shape is None:
                    shape = frame.shape
                    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] % 2 or frame.shape[1] % 2:
                        raise ValueError(f"frames must be (H, W, 3) with even H and W, got {frame.shape}")
                elif frame.shape != shape:
                    raise ValueError(f"frame {count} has shape {frame.shape}, the first had {shape}")
                writer.append_data(frame.astype(np.uint8, copy=False))
                count += 1
        finally:
            # imageio's context manager skips close() on errors; ffmpeg would then finish the file later.
            writer.close()
        if count == 0:
            raise ValueError("write_video got no frames")
    return count


# --- recording a game -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GameRecording:
    """What a recorded game was: the numbers on the summary card.

    Attributes:
        path: the video file.
        frames: video frames written (decisions shown + the summary card).
        decisions: decisions the agent made.
        score: raw return.
        finished: True if the game ended (False: cut at ``max_seconds``).
        inference_time: mean FLOPs per decision / the expert's.
        exit_rates: fraction of decisions answered at each exit (the expert's head last).
        agreement: fraction of decisions whose action equals the expert's argmax action.
    """

    path: Path
    frames: int
    decisions: int
    score: float
    finished: bool
    inference_time: float
    exit_rates: tuple[float, ...]
    agreement: float

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {**dataclasses.asdict(self), "path": str(self.path), "exit_rates": list(self.exit_rates)}


def record_game(
    policy: EarlyExitPolicy,
    rule: ExitRule,
    env: str,
    path: str | Path,
    *,
    seed: int = 0,
    sticky_prob: float = 0.1,
    max_seconds: float | None = None,
    fps: float = 30.0,
    scale: int = 3,
    summary_seconds: float = 3.0,
    title: str = "",
    max_episode_frames: int = MAX_EPISODE_FRAMES,
) -> GameRecording:
    """Play one full game with ``policy`` under ``rule`` and write it as a video with the exit overlay.

    One video frame per decision (at ``fps``; the game runs at 15 decisions per second, so 30 fps is 2× speed).
    ``max_seconds`` caps the game part of the video; a summary card of ``summary_seconds`` ends it. The game is cut
    after ``max_episode_frames`` emulator frames (ALE's 108,000).
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise UserError(f"scale must be a positive integer, got {scale!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise UserError(f"max seconds must be positive, got {max_seconds}")
    if not fps > 0:
        raise UserError(f"fps must be positive, got {fps}")
    game = rom_id(env)
    max_decisions = math.inf if max_seconds is None else max(1, int(max_seconds * fps))
    num_ics = policy.num_ics
    agent_env = make_atari_env(game, 1, training=False, sticky_prob=0.0, seed=seed, num_threads=1,
                               max_episode_frames=max_episode_frames)
    screen = LockstepScreen(game, max_episode_frames=max_episode_frames)
    sticky = StickyActions(1, sticky_prob, seed)  # drawn here so both emulators get the executed action
    tally = DecisionTally(num_ics)
    outcome = {"score": 0.0, "finished": False}

    def game_frames() -> Iterator[np.ndarray]:
        obs = agent_env.reset()
        frame = screen.reset(seed)[0]
        while tally.decisions < max_decisions:
            result = policy.act(obs, rule)
            tally.add(result, expert_actions_for(policy, obs, result))
            action = int(result.actions[0])
            yield overlay_frame(
                frame,
                DecisionOverlay(
                    exit_index=int(result.exit_index[0]),
                    num_ics=num_ics,
                    confidence=float(np.exp(result.log_probs[0, action])),
                    compute_saved=1.0 - tally.inference_time,
                    score=outcome["score"],
                    decision=tally.decisions - 1,
                    exit_rates=tally.exit_rates,
                ),
                scale,
            )
            executed = sticky(result.actions)
            obs, reward, done, _ = agent_env.step(executed)
            frame = screen.step(executed)[0]
            outcome["score"] += float(reward[0])
            if done[0]:
                outcome["finished"] = True
                break
        size = (ATARI_SCREEN[0] * scale + PANEL_HEIGHT, ATARI_SCREEN[1] * scale)
        lines = summary_lines(tally, outcome["score"], bool(outcome["finished"]), title, fps)
        card = text_card(lines, size)
        for _ in range(max(1, int(summary_seconds * fps))):
            yield card

    try:
        frames = write_video(game_frames(), path, fps)
    finally:
        agent_env.close()
        screen.close()
    return GameRecording(
        path=Path(path),
        frames=frames,
        decisions=tally.decisions,
        score=outcome["score"],
        finished=bool(outcome["finished"]),
        inference_time=tally.inference_time,
        exit_rates=tally.exit_rates,
        agreement=tally.agreement,
    )


def summary_lines(tally: DecisionTally, score: float, finished: bool, title: str, fps: float) -> list[str]:
    """The text of the closing card."""
    num_ics = tally.exit_counts.shape[0] - 1
    shares = " · ".join(f"{exit_name(m, num_ics)} {100 * r:.1f} %" for m, r in enumerate(tally.exit_rates))
    how = "one full game" if finished else f"cut after {tally.decisions / fps:.0f} s of video"
    return [
        title or "early-exit agent",
        f"return {score:+g} in {tally.decisions} decisions ({how})",
        f"exits: {shares}",
        f"compute saved {100 * (1 - tally.inference_time):.1f} % of the expert's FLOPs",
        f"agreement with the expert's action {100 * tally.agreement:.1f} %",
    ]
