import pytest

from ee_rl.errors import UserError
from ee_rl.rl.games import PAPER_GAMES, display_name, rom_id


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Pong", "pong"),
        ("pong", "pong"),
        ("ALE/Pong-v5", "pong"),
        ("PongNoFrameskip-v4", "pong"),
        ("MsPacman", "ms_pacman"),
        ("ms_pacman", "ms_pacman"),
        ("AirRaid", "air_raid"),
        ("Qbert", "qbert"),
    ],
)
def test_names_map_to_rom_ids(name, expected):
    assert rom_id(name) == expected


def test_paper_games_round_trip():
    for game in PAPER_GAMES:
        assert display_name(rom_id(game)) == game


def test_unknown_game_suggests_close_names():
    with pytest.raises(UserError, match="did you mean Pong"):
        rom_id("Pongg")


def test_non_atari_id_is_rejected():
    with pytest.raises(UserError, match="not an Atari game"):
        rom_id("CartPole-v1")
