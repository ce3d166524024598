"""Tests of ee_rl.core.onnx_export, ee_rl.core.onnx_runner and ee_rl.core.runtime: the ONNX Runtime runner answers
exactly what the eager model answers (same exits, same actions, log-probs within 1e-4), on real Pong states from the
shipped agent and on a digits backbone, and its graph cache is never used stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from ee_rl.core import MaxProbExit, PatienceExit, PerExitThresholds, forced_exit_rule  # noqa: E402
from ee_rl.core import onnx_export  # noqa: E402
from ee_rl.core.fingerprint import file_sha256  # noqa: E402
from ee_rl.core.onnx_runner import OnnxEarlyExitRunner  # noqa: E402
from ee_rl.core.runtime import check_runtime, make_runner  # noqa: E402
from ee_rl.errors import UserError  # noqa: E402
from tests.core.builders import make_tiny_model, random_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PONG = ROOT / "agents" / "Pong"
#: The issue's bar: at least this many real observations, every row compared.
PONG_STATES = 10_000
LOG_PROB_TOL = 1e-4


def assert_same_answers(model, runner, x: torch.Tensor, rule, batch_size: int) -> np.ndarray:
    """Every row: same exit, same argmax, same FLOPs, log-probs within 1e-4. Returns the exit counts."""
    exits = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size]
        eager, compiled = model.infer(chunk, rule), runner.infer(chunk, rule)
        assert torch.equal(eager.exit_index, compiled.exit_index), rule
        assert torch.equal(eager.log_probs.argmax(-1), compiled.log_probs.argmax(-1)), rule
        assert torch.equal(eager.flops, compiled.flops), rule
        assert (eager.log_probs - compiled.log_probs).abs().max().item() < LOG_PROB_TOL, rule
        exits.append(eager.exit_index)
    return torch.bincount(torch.cat(exits), minlength=model.num_ics + 1).numpy()


def mixing_thresholds(model, x: torch.Tensor) -> tuple[float, ...]:
    """Per-exit thresholds near the median confidence of each exit, so every exit lets some rows out and keeps
    others; each lies in the widest gap between neighbouring confidences around the median (a threshold equal to a
    sample's confidence would make float rounding, not the runtimes, decide that sample)."""
    with torch.no_grad():
        conf = model.all_exits(x).exit_log_probs.amax(-1).exp().double()
    taus = []
    for c in conf:
        values = c.sort().values
        n = values.shape[0]
        window = values[n // 4 : 3 * n // 4 + 1]
        k = int((window[1:] - window[:-1]).argmax())
        taus.append(float((window[k] + window[k + 1]) / 2))
    return tuple(taus)


# --- real Pong states through the shipped agent ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pong_states() -> torch.Tensor:
    from ee_rl.rl.policy import load_early_exit_agent
    from ee_rl.selfxit.rl import collect_expert_states

    policy = load_early_exit_agent(PONG / "expert.zip", PONG / "exits-sdn.pt", game="Pong")
    states = collect_expert_states(policy, "pong", PONG_STATES, n_envs=8, stride=1, sticky_prob=0.1, seed=4321)
    return torch.from_numpy(states)


@pytest.fixture(scope="module")
def pong_models(tmp_path_factory):
    """(model, runner) of the shipped ZTW and SDN agents, graphs exported into a fresh cache."""
    from ee_rl.rl.policy import load_early_exit_agent

    cache = tmp_path_factory.mktemp("onnx_cache")
    out = {}
    for method in ("ztw", "sdn"):
        policy = load_early_exit_agent(PONG / "expert.zip", PONG / f"exits-{method}.pt", game="Pong")
        sample = torch.zeros((1, 4, 84, 84), dtype=torch.uint8)
        out[method] = (policy.model, make_runner(policy.model, "onnx", sample=sample, cache_dir=cache))
    return out


def test_onnx_runner_equals_eager_on_real_pong_states(pong_states, pong_models):
    assert pong_states.shape[0] >= PONG_STATES and pong_states.dtype == torch.uint8
    ztw, ztw_runner = pong_models["ztw"]
    sdn, sdn_runner = pong_models["sdn"]
    # The sweep's own thresholds (every row of them is compared, ties and all), and SelfXit per-exit thresholds.
    cases = [
        ("ZTW", ztw, ztw_runner, MaxProbExit(0.2)),
        ("ZTW", ztw, ztw_runner, MaxProbExit(0.3)),
        ("SDN", sdn, sdn_runner, MaxProbExit(0.2)),
        ("SDN", sdn, sdn_runner, MaxProbExit(0.3)),
        ("PBEE", sdn, sdn_runner, PatienceExit(1)),
        ("SelfXit", sdn, sdn_runner, PerExitThresholds((0.8, 0.9))),
        ("full", ztw, ztw_runner, MaxProbExit(2.0)),
    ]
    for name, model, runner, rule in cases:
        counts = assert_same_answers(model, runner, pong_states, rule, batch_size=512)
        if name != "full":  # the rule really shrinks batches: rows leave at an IC and others go on
            assert counts[:-1].sum() > 0 and counts[-1] > 0, (name, counts)
        # batch 1 (the acting path) on a slice
        assert_same_answers(model, runner, pong_states[:200], rule, batch_size=1)


def test_onnx_all_exits_equal_eager_and_backbone_is_the_expert(pong_states, pong_models):
    model, runner = pong_models["ztw"]
    x = pong_states[:1024]
    with torch.no_grad():
        eager = model.all_exits(x)
    compiled = runner.all_exits(x)
    for field in ("ic_log_probs", "ensemble_log_probs", "final_log_probs"):
        assert (getattr(eager, field) - getattr(compiled, field)).abs().max().item() < LOG_PROB_TOL, field
    assert torch.equal(eager.final_logits.argmax(-1), compiled.final_logits.argmax(-1))
    assert torch.equal(runner.backbone_log_probs(x).argmax(-1), eager.final_log_probs.argmax(-1))
    for m in range(model.num_ics):  # a forced exit answers that exit's output for every row
        out = runner.infer(x, forced_exit_rule(model.num_ics, m))
        assert torch.equal(out.exit_index, torch.full((x.shape[0],), m))
        assert (out.log_probs - eager.exit_log_probs[m]).abs().max().item() < LOG_PROB_TOL


def test_infer_iter_streams_the_same_chunks(pong_states, pong_models):
    model, runner = pong_models["sdn"]
    rule = MaxProbExit(mixing_thresholds(model, pong_states[:512])[0])
    x = pong_states[:512]
    eager, compiled = list(model.infer_iter(x, rule)), list(runner.infer_iter(x, rule))
    assert [c.exit_index for c in eager] == [c.exit_index for c in compiled] and len(eager) > 1
    for a, b in zip(eager, compiled):
        assert torch.equal(a.rows, b.rows) and a.flops == b.flops
        assert (a.log_probs - b.log_probs).abs().max().item() < LOG_PROB_TOL


# --- a digits backbone (vision) ----------------------------------------------------------------------------------


def test_onnx_runner_equals_eager_on_a_digits_backbone(tmp_path):
    from sklearn.datasets import load_digits

    from ee_rl.core.method import method_by_name
    from ee_rl.vision.backbones import build_backbone
    from ee_rl.vision.methods import build_model

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    net = build_backbone("resnet20_w8", 10, (1, 8, 8), [0.5], [0.5], seed=0)
    with torch.no_grad():  # non-trivial BatchNorm statistics: eval-mode BN must be exported as it runs
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    backbone = net.frozen()
    for method in ("sdn", "ztw"):
        torch.manual_seed(1)
        model = build_model(method_by_name(method), backbone, net.placement, 10, images[:1]).eval()
        with torch.no_grad():
            for head in model.heads:
                head.linear.weight.mul_(4.0)  # random heads: spread their confidences
        runner = make_runner(model, "onnx", sample=images[:1], cache_dir=tmp_path)
        taus = mixing_thresholds(model, images)
        for rule in (MaxProbExit(taus[0]), PerExitThresholds(taus), PatienceExit(1)):
            counts = assert_same_answers(model, runner, images, rule, batch_size=256)
            assert (counts > 0).sum() >= 2, (method, rule, counts)  # rows left at different exits


# --- wiring variants and the cache (a tiny model: fast) ----------------------------------------------------------


@pytest.mark.parametrize("ensembles, cascade", [("geometric", True), ("additive", True), (None, False),
                                                (None, True)])
def test_every_wiring_exports_exactly(tmp_path, ensembles, cascade):
    model = make_tiny_model(ensembles=ensembles, cascade=cascade)
    x = random_images(300)
    runner = make_runner(model, "onnx", sample=x[:1], cache_dir=tmp_path)
    for rule in (MaxProbExit(mixing_thresholds(model, x)[0]), PatienceExit(1), PatienceExit(2)):
        assert_same_answers(model, runner, x, rule, batch_size=64)


def _export_count(monkeypatch) -> list[int]:
    calls = [0]
    real = onnx_export.export_segments

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "export_segments", counting)
    return calls


def test_cache_is_reused_and_never_used_stale(tmp_path, monkeypatch):
    calls = _export_count(monkeypatch)
    model = make_tiny_model()
    x = random_images(64)
    first = onnx_export.load_or_export_segments(model, x[:1], tmp_path)
    assert calls[0] == 1 and (first / onnx_export.MANIFEST).is_file()
    assert onnx_export.load_or_export_segments(model, x[:1], tmp_path) == first and calls[0] == 1  # reused

    # A corrupt file is exported again, never loaded.
    segment = first / "segment1.onnx"
    segment.write_bytes(segment.read_bytes()[:100])
    again = onnx_export.load_or_export_segments(model, x[:1], tmp_path)
    assert again == first and calls[0] == 2
    assert_same_answers(model, OnnxEarlyExitRunner(model, again), x, MaxProbExit(0.5), batch_size=16)

    # New weights: a new key, a new folder; the old graphs cannot answer for them.
    with torch.no_grad():
        model.heads[0].linear.bias.add_(1.0)
    changed = onnx_export.load_or_export_segments(model, x[:1], tmp_path)
    assert changed != first and calls[0] == 3
    assert_same_answers(model, OnnxEarlyExitRunner(model, changed), x, MaxProbExit(0.5), batch_size=16)

    # A file that matches its manifest but that ONNX Runtime refuses (e.g. an older exporter's) is re-exported too.
    bad = changed / "segment0.onnx"
    bad.write_bytes(b"not an onnx graph")
    manifest = (changed / onnx_export.MANIFEST).read_text()
    import json

    data = json.loads(manifest)
    data["files"]["segment0"] = file_sha256(bad)
    (changed / onnx_export.MANIFEST).write_text(json.dumps(data))
    runner = make_runner(model, "onnx", sample=x[:1], cache_dir=tmp_path)
    assert calls[0] == 4
    assert_same_answers(model, runner, x, MaxProbExit(0.5), batch_size=16)


def test_export_leaves_the_model_untouched():
    model = make_tiny_model()
    x = random_images(32)
    before = model.infer(x, MaxProbExit(0.5))
    key = onnx_export.export_key(model, x[:1])
    onnx_export.export_segments(model, x[:1], Path(__import__("tempfile").mkdtemp()))
    after = model.infer(x, MaxProbExit(0.5))
    assert torch.equal(before.log_probs, after.log_probs) and torch.equal(before.exit_index, after.exit_index)
    assert onnx_export.export_key(model, x[:1]) == key
    assert all(not getattr(m, "_for_export", False) for m in model.modules())


def test_runtime_errors_are_one_line(monkeypatch):
    with pytest.raises(UserError, match="unknown runtime 'tensorrt'"):
        check_runtime("tensorrt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails, as where it is not installed
    with pytest.raises(UserError, match=r"pip install 'ee_rl\[onnx\]'"):
        check_runtime("onnx")
    assert check_runtime("torch") == "torch"


@pytest.mark.parametrize("script", ["sweep", "bench_latency", "record_video", "serve", "selfxit", "eval_vision"])
def test_cli_without_onnxruntime_says_what_to_install(script):
    code = (
        "import sys; sys.modules['onnxruntime'] = None; "
        f"sys.argv = ['{script}.py', '--runtime', 'onnx']; "
        f"from ee_rl.cli.{script} import main; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "pip install 'ee_rl[onnx]'" in lines[0], lines[0]
