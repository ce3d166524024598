import pytest
from stable_baselines3.common.utils import LinearSchedule

from ee_rl.errors import UserError
from ee_rl.rl.expert import ExpertConfig, load_expert_config, schedule


def test_default_config_has_the_papers_hyper_parameters():
    cfg = load_expert_config(None, "Pong")
    assert (cfg.n_steps, cfg.batch_size, cfg.n_epochs, cfg.n_envs) == (128, 256, 4, 8)
    assert (cfg.ent_coef, cfg.vf_coef, cfg.gamma, cfg.gae_lambda, cfg.max_grad_norm) == (0.01, 0.5, 0.99, 0.95, 0.5)
    assert cfg.total_timesteps == 10_000_000 and cfg.sticky_prob == 0.1
    lr = schedule(cfg.learning_rate)
    assert isinstance(lr, LinearSchedule)
    assert lr(1.0) == pytest.approx(2.5e-4) and lr(0.5) == pytest.approx(1.25e-4) and lr(0.0) == 0.0
    assert schedule(cfg.clip_range)(1.0) == pytest.approx(0.1)


def test_game_section_overrides_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("atari:\n  n_envs: 8\n  ent_coef: 0.01\nQbert:\n  n_envs: 4\n")
    assert load_expert_config(path, "ALE/Qbert-v5").n_envs == 4
    assert load_expert_config(path, "Pong").n_envs == 8
    assert load_expert_config(path, "Pong").ent_coef == 0.01


@pytest.mark.parametrize(
    "text, message",
    [
        ("atari:\n  n_stepz: 3\n", "unknown key"),
        ("atari:\n  n_steps: abc\n", "must be an integer"),
        ("atari:\n  learning_rate: lin_x\n", "learning_rate must be"),
        ("pong: {}\n", "no 'atari' section"),
        ("atari: [1, 2\n", "not valid YAML"),
    ],
)
def test_bad_configs_are_user_errors(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_expert_config(path, "Pong")


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_expert_config(tmp_path / "nope.yaml", "Pong")


def test_constant_schedule_and_dataclass_defaults():
    assert schedule(0.1) == 0.1
    assert ExpertConfig().fast is True
