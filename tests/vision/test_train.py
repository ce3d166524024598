"""Training phases: ICs on a frozen backbone, ensembles on cached log-probabilities, resume, transfer learning."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ee_rl.core import make_ensembles
from ee_rl.core.method import ZTW, exit_method
from ee_rl.errors import UserError
from ee_rl.vision.backbones import build_backbone
from ee_rl.vision.config import PhaseConfig, load_vision_config
from ee_rl.vision.data import TensorSplit, VisionData
from ee_rl.vision.methods import build_model
from ee_rl.vision.train import RunSpec, load_weights, run_epochs, train_ensembles, train_ics, train_new_head

CPU = torch.device("cpu")


def tiny_data(n: int = 48, num_classes: int = 3, seed: int = 0, shape=(1, 8, 8)) -> VisionData:
    """Images whose class shifts the mean intensity (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = (0.3 * labels.view(-1, 1, 1, 1) / num_classes + 0.2 * torch.rand((n, *shape), generator=g)).float()
    split = TensorSplit(images, labels)
    return VisionData("tiny", num_classes, shape, (0.3,) * shape[0], (0.2,) * shape[0], split, split,
                      tuple(map(str, range(num_classes))))


def tiny_config(**ics) -> object:
    cfg = load_vision_config(None, "digits", "small_cnn", ["eval_every=0"])
    cfg.ics = PhaseConfig(optimizer="adam", lr=1e-2, epochs=2, milestones=[], batch_size=16, **ics)
    return cfg


def test_ic_training_changes_only_the_heads_and_keeps_the_backbone_exact(tmp_path):
    data = tiny_data()
    net = build_backbone("small_cnn", 3, (1, 8, 8), (0.3,), (0.2,), seed=0)
    backbone_before = copy.deepcopy(net.state_dict())
    model = build_model(ZTW, net.frozen(), net.placement, 3, torch.zeros(1, 1, 8, 8))
    heads_before = copy.deepcopy(model.heads.state_dict())
    ens_before = copy.deepcopy(model.ensembles.state_dict())
    train_ics(model, ZTW, data, tiny_config(), seed=0, device=CPU, ckpt_path=tmp_path / "ics.ckpt", resume=False,
              writer=None, progress=False)
    after = net.state_dict()
    assert all(torch.equal(backbone_before[k], after[k]) for k in backbone_before)  # incl. BN running stats
    heads_after = model.heads.state_dict()
    assert all(not torch.equal(heads_before[k], heads_after[k]) for k in heads_before if k.endswith("weight"))
    assert all(torch.equal(ens_before[k], v) for k, v in model.ensembles.state_dict().items())


def test_sum_of_ic_losses_with_stop_gradient_gives_each_ic_its_own_gradient():
    """ZTW C.3: with detach, IC m's loss never reaches ICs < m; without it, IC 1's gradient changes."""
    data = tiny_data()
    net = build_backbone("small_cnn", 3, (1, 8, 8), (0.3,), (0.2,), seed=0)
    x, y = next(data.train.batches(16))
    grads = {}
    for variant in (ZTW, exit_method("ztw", no_stop_gradient=True)):
        torch.manual_seed(1)
        model = build_model(variant, net.frozen(), net.placement, 3, x[:1])
        out = model.all_exits(x)
        own = torch.autograd.grad(F.cross_entropy(out.ic_logits[0], y), model.heads[0].linear.weight,
                                  retain_graph=True)[0]
        total = F.cross_entropy(out.ic_logits.flatten(0, 1), y.repeat(5), reduction="sum") / 16
        grads[variant.name] = (own, torch.autograd.grad(total, model.heads[0].linear.weight)[0])
    own, total = grads["ztw"]
    assert torch.allclose(own, total, atol=1e-7)
    own, total = grads["ztw-no-stop-gradient"]
    assert not torch.allclose(own, total, atol=1e-5)


def test_resumed_training_equals_uninterrupted_training(tmp_path):
    data = tiny_data()
    cfg = PhaseConfig(optimizer="sgd", lr=0.05, momentum=0.9, epochs=3, milestones=[2], batch_size=16)

    def run(ckpt: Path, epochs: int, resume: bool, start_from: dict | None = None):
        net = build_backbone("small_cnn", 3, (1, 8, 8), (0.3,), (0.2,), seed=0)

        def loss_fn(x, y):
            logits = net(x)
            return F.cross_entropy(logits, y), (logits.argmax(-1) == y).sum().unsqueeze(0)

        phase = copy.copy(cfg)
        phase.epochs = epochs
        run_epochs("backbone", net, loss_fn, data.train, phase, seed=0, device=CPU, augment=False, ckpt_path=ckpt,
                   resume=resume, writer=None, progress=False, set_train_mode=net.train)
        return net.state_dict()

    straight = run(tmp_path / "a.ckpt", 3, False)
    run(tmp_path / "b.ckpt", 2, False)  # "killed" after 2 of 3 epochs
    resumed = run(tmp_path / "b.ckpt", 3, True)
    assert torch.load(tmp_path / "b.ckpt", weights_only=False)["epoch"] == 3
    for key in straight:
        assert torch.allclose(straight[key].float(), resumed[key].float(), atol=1e-6), key


def test_ensembles_trained_together_equal_ensembles_trained_alone():
    torch.manual_seed(0)
    m, n, k = 3, 64, 4
    labels = torch.randint(0, k, (n,))
    logits = torch.randn(m, n, k) + 2.0 * F.one_hot(labels, k).float() * torch.rand(m, n, 1)
    log_probs = torch.log_softmax(logits, -1)
    cfg = PhaseConfig(optimizer="adam", lr=0.05, epochs=30, milestones=[], batch_size=20)
    together = make_ensembles(m, k)
    info = train_ensembles(together, log_probs, labels, cfg, seed=3, device=CPU)
    for j in range(m):
        alone = make_ensembles(m, k)
        # train only ensemble j: freeze the others' parameters
        for i, e in enumerate(alone):
            e.requires_grad_(i == j)
        train_ensembles(alone, log_probs, labels, cfg, seed=3, device=CPU)
        for p, q in zip(together[j].parameters(), alone[j].parameters()):
            assert torch.allclose(p, q, atol=1e-5)
    # the last ensemble learned something: at least as good on its training data as its best member
    members = list(log_probs.unbind(0))
    nll_ens = F.nll_loss(together[m - 1](members), labels)
    nll_members = min(F.nll_loss(lp, labels) for lp in members)
    assert nll_ens < nll_members
    assert set(info) == {"loss", "train_acc_0", "train_acc_1", "train_acc_2"}


def test_transfer_learning_trains_only_a_new_linear_head(tmp_path):
    data = tiny_data(num_classes=2)
    net = build_backbone("small_cnn", 7, (1, 8, 8), (0.3,), (0.2,), seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = tiny_config()
    cfg.transfer = PhaseConfig(optimizer="adam", lr=1e-2, epochs=2, milestones=[], batch_size=16)
    train_new_head(net, data, cfg, seed=0, device=CPU, ckpt_path=tmp_path / "t.ckpt", resume=False, writer=None,
                   progress=False)
    after = net.state_dict()
    assert net.final_linear().out_features == 2
    changed = {k for k in after if k not in before or not torch.equal(before[k], after[k])}
    assert changed == {"head.2.weight", "head.2.bias"}


def test_load_weights_checks_classes_unless_transferring(tmp_path):
    source = build_backbone("small_cnn", 6, (1, 8, 8), (0.3,), (0.2,), seed=4)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    spec = RunSpec(dataset="digits", arch="small_cnn", out_dir=tmp_path, config=tiny_config(), weights=path)
    net = load_weights(spec, tiny_data(num_classes=6))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), source.state_dict().values()))
    with pytest.raises(UserError, match="--transfer"):
        load_weights(spec, tiny_data(num_classes=2))
    spec.transfer = True
    assert load_weights(spec, tiny_data(num_classes=2)).final_linear().out_features == 6  # replaced by the head phase
    spec.arch = "resnet20"
    with pytest.raises(UserError, match="does not match resnet20|no 'head"):
        load_weights(spec, tiny_data(num_classes=6))
