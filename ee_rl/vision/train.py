"""Training of one vision run (one dataset, architecture and seed), phase by phase:

1. the backbone — the standard SGD recipe, or weights from a file (``--weights``), optionally with a new linear head
   trained on the frozen pretrained features (transfer learning, ZTW appendix B.3);
2. per exit variant (ZTW, SDN, ablations), the ICs on the frozen backbone (ZTW A.1: Adam 1e-3, 50 epochs, ÷10 after
   epoch 15), all ICs at once with the sum of their cross-entropies (with stop-gradient cascades this is the same as
   training each IC alone);
3. the ensembles, on per-IC log-probabilities of the training set cached once, so their 500 epochs take seconds.

Each phase checkpoints atomically after every epoch and resumes from there; finished phases are saved as
``backbone.pt`` and ``exits-<variant>.pt`` in the run directory, with TensorBoard logs in ``tb/``.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from ee_rl.core import EarlyExitModel
from ee_rl.core.heads_file import write_heads_file
from ee_rl.core.method import SDN, ZTW, ExitMethod
from ee_rl.devices import resolve_device
from ee_rl.errors import UserError
from ee_rl.io import RunDirLock, atomic_write_json, ensure_writable_dir
from ee_rl.vision.backbones import StagedNet, build_backbone, load_torchvision_resnet50
from ee_rl.vision.checkpoint import (
    BACKBONE_KIND,
    backbone_record,
    exits_record,
    load_backbone,
    load_torch,
    save_torch,
)
from ee_rl.vision.config import PhaseConfig, VisionConfig
from ee_rl.vision.data import ImageSplit, VisionData, check_dataset_source, load_dataset
from ee_rl.vision.evaluate import collect_all_exits
from ee_rl.vision.methods import build_model

LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def make_optimizer(params: Sequence[nn.Parameter], cfg: PhaseConfig) -> torch.optim.Optimizer:
    """SGD (with momentum) or Adam, as the phase config says."""
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: PhaseConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """Multiply the learning rate by ``gamma`` at each milestone epoch (stepped once per epoch)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=sorted(cfg.milestones), gamma=cfg.gamma)


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle/augmentation seed of ``epoch`` (reproducible, so a resumed run sees the same batches)."""
    return seed * 100_003 + epoch


@torch.no_grad()
def accuracy(net: nn.Module, split: ImageSplit, batch_size: int, device: torch.device) -> float:
    """Top-1 accuracy (percent) of ``net``'s logits on ``split``, in eval mode (the mode is restored)."""
    was_training = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for x, y in split.batches(batch_size, device=device):
        correct += (net(x).argmax(dim=-1) == y).sum()
    net.train(was_training)
    return 100.0 * int(correct) / len(split)


def run_epochs(
    tag: str,
    trainable: nn.Module,
    loss_fn: LossFn,
    split: ImageSplit,
    cfg: PhaseConfig,
    *,
    seed: int,
    device: torch.device,
    augment: bool,
    ckpt_path: Path,
    resume: bool,
    writer: SummaryWriter | None,
    progress: bool,
    set_train_mode: Callable[[], None],
    evaluate: Callable[[], dict[str, float]] | None = None,
    eval_every: int = 1,
) -> dict[str, Any]:
    """Train the parameters of ``trainable`` that require gradients for ``cfg.epochs`` epochs.

    ``loss_fn(x, y)`` returns the loss and a vector of correct-prediction counts (one per output being trained).
    After every epoch: LR step, TensorBoard scalars (``<tag>/loss``, ``<tag>/train_acc_<i>`` and ``evaluate()``'s
    values, every ``eval_every`` epochs and after the last; 0 = after the last only) and an atomic checkpoint at
    ``ckpt_path``, from which ``resume=True`` continues.
    """
    params = [p for p in trainable.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{tag}: nothing to train (no parameter requires gradients)")
    optimizer = make_optimizer(params, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    start = 0
    if resume and ckpt_path.is_file():
        state = load_torch(ckpt_path, f"{tag} checkpoint")
        if state.get("tag") != tag:
            raise UserError(f"{ckpt_path} is a checkpoint of {state.get('tag')!r}, not of {tag!r}")
        trainable.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["epoch"])
    history: dict[str, float] = {}
    bar = tqdm(range(start, cfg.epochs), desc=tag, disable=not progress, initial=start, total=cfg.epochs)
    for epoch in bar:
        set_train_mode()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct: torch.Tensor | None = None
        seen = 0
        for x, y in split.batches(cfg.batch_size, shuffle=True, augment=augment, seed=epoch_seed(seed, epoch),
                                  device=device):
            loss, hits = loss_fn(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * y.shape[0]
            correct = hits if correct is None else correct + hits
            seen += y.shape[0]
        scheduler.step()
        history = {"loss": float(loss_sum) / max(seen, 1)}
        if correct is not None:
            for i, c in enumerate(correct.tolist()):
                history[f"train_acc_{i}"] = 100.0 * c / max(seen, 1)
        last = epoch + 1 == cfg.epochs
        if evaluate is not None and (last or (eval_every > 0 and (epoch + 1) % eval_every == 0)):
            history.update(evaluate())
        if writer is not None:
            for key, value in history.items():
                writer.add_scalar(f"{tag}/{key}", value, epoch + 1)
            writer.add_scalar(f"{tag}/lr", optimizer.param_groups[0]["lr"], epoch + 1)
        bar.set_postfix({k: round(v, 3) for k, v in list(history.items())[:3]})
        save_torch(
            ckpt_path,
            {
                "tag": tag,
                "epoch": epoch + 1,
                "model": trainable.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            },
        )
    bar.close()
    return history


def _train_classifier(
    tag: str, net: StagedNet, trainable: nn.Module, phase: PhaseConfig, set_train_mode: Callable[[], Any],
    data: VisionData, cfg: VisionConfig, *, seed: int, device: torch.device, ckpt_path: Path, resume: bool,
    writer: SummaryWriter | None, progress: bool,
) -> dict[str, Any]:
    """Cross-entropy of ``net``'s logits on augmented training batches, updating ``trainable`` (``phase``'s
    optimiser and epochs); logs ``net``'s test accuracy."""

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = net(x)
        return F.cross_entropy(logits, y), (logits.argmax(-1) == y).sum().unsqueeze(0)

    return run_epochs(
        tag, trainable, loss_fn, data.train, phase, seed=seed, device=device, augment=True,
        ckpt_path=ckpt_path, resume=resume, writer=writer, progress=progress, set_train_mode=set_train_mode,
        evaluate=lambda: {"test_acc": accuracy(net, data.test, cfg.eval_batch_size, device)},
        eval_every=cfg.eval_every,
    )


def train_backbone(
    net: StagedNet, data: VisionData, cfg: VisionConfig, *, seed: int, device: torch.device, ckpt_path: Path,
    resume: bool, writer: SummaryWriter | None, progress: bool,
) -> dict[str, Any]:
    """The backbone's own training (``cfg.backbone``: SGD, step LR), cross-entropy on augmented batches."""
    net.to(device)
    return _train_classifier(
        "backbone", net, net, cfg.backbone, net.train, data, cfg, seed=seed, device=device, ckpt_path=ckpt_path,
        resume=resume, writer=writer, progress=progress,
    )


def train_new_head(
    net: StagedNet, data: VisionData, cfg: VisionConfig, *, seed: int, device: torch.device, ckpt_path: Path,
    resume: bool, writer: SummaryWriter | None, progress: bool,
) -> dict[str, Any]:
    """Transfer learning (ZTW B.3): a fresh final linear layer for ``data``'s classes, trained on the frozen
    pretrained features (BatchNorm in eval mode); every other weight stays as loaded."""
    linear = net.replace_final_linear(data.num_classes)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in linear.parameters():
        p.requires_grad_(True)
    net.to(device)
    return _train_classifier(
        "transfer_head", net, linear, cfg.transfer, net.eval, data, cfg, seed=seed, device=device,
        ckpt_path=ckpt_path, resume=resume, writer=writer, progress=progress,
    )


def ic_test_accuracies(model: EarlyExitModel, split: ImageSplit, batch_size: int, device: torch.device) -> list[float]:
    """Test accuracy (percent) of every IC's own prediction (not the ensembles')."""
    outputs, targets = collect_all_exits(model, split, batch_size, device)
    return (outputs.ic_log_probs.argmax(-1) == targets).double().mean(dim=1).mul(100).tolist()


def train_ics(
    model: EarlyExitModel, variant: ExitMethod, data: VisionData, cfg: VisionConfig, *, seed: int,
    device: torch.device, ckpt_path: Path, resume: bool, writer: SummaryWriter | None, progress: bool,
) -> dict[str, Any]:
    """The ICs of ``model`` on its frozen backbone: sum of the ICs' cross-entropies (``cfg.ics``, Adam)."""
    model.to(device)

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model.all_exits(x)
        logits = out.ic_logits  # (M, B, K)
        loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(logits.shape[0]), reduction="sum") / y.shape[0]
        return loss, (logits.argmax(-1) == y).sum(dim=1)

    def evaluate() -> dict[str, float]:
        accs = ic_test_accuracies(model, data.test, cfg.eval_batch_size, device)
        return {f"test_acc_{i}": a for i, a in enumerate(accs)}

    return run_epochs(
        f"ics/{variant.name}", model.heads, loss_fn, data.train, cfg.ics, seed=seed, device=device, augment=True,
        ckpt_path=ckpt_path, resume=resume, writer=writer, progress=progress, set_train_mode=model.train,
        evaluate=evaluate, eval_every=cfg.eval_every,
    )


def train_ensembles(
    ensembles: nn.ModuleList,
    ic_log_probs: torch.Tensor,
    labels: torch.Tensor,
    cfg: PhaseConfig,
    *,
    seed: int,
    device: torch.device,
    writer: SummaryWriter | None = None,
    tag: str = "ensembles",
    progress: bool = False,
) -> dict[str, float]:
    """Fit ensemble m (over ICs 0..m) to the labels from cached IC log-probabilities ``(M, N, K)``.

    All M ensembles step together on the sum of their NLL losses; their parameters are disjoint, so this is the same
    as fitting each alone. Returns each ensemble's final training accuracy (percent) and the final loss.
    """
    num_ics, n, _ = ic_log_probs.shape
    if len(ensembles) != num_ics or labels.shape != (n,):
        raise ValueError(f"need {num_ics} ensembles and {n} labels, got {len(ensembles)} and {tuple(labels.shape)}")
    ensembles.to(device).train()
    log_probs = ic_log_probs.to(device)
    targets = labels.to(device)
    optimizer = make_optimizer(ensembles.parameters(), cfg)
    scheduler = make_scheduler(optimizer, cfg)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(range(cfg.epochs), desc=tag, disable=not progress)
    loss = torch.zeros(())
    for epoch in bar:
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            members = list(log_probs.index_select(1, idx).unbind(0))
            y = targets.index_select(0, idx)
            loss = sum(F.nll_loss(ens(members[: m + 1]), y) for m, ens in enumerate(ensembles))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        if writer is not None and ((epoch + 1) % 50 == 0 or epoch + 1 == cfg.epochs):
            writer.add_scalar(f"{tag}/loss", float(loss.detach()), epoch + 1)
    with torch.no_grad():
        members = list(log_probs.unbind(0))
        accs = [100.0 * float((ens(members[: m + 1]).argmax(-1) == targets).double().mean())
                for m, ens in enumerate(ensembles)]
    if writer is not None:
        for m, a in enumerate(accs):
            writer.add_scalar(f"{tag}/train_acc_{m}", a, cfg.epochs)
    ensembles.eval()
    return {"loss": float(loss.detach()), **{f"train_acc_{m}": a for m, a in enumerate(accs)}}


# ------------------------------------------------------------------------------------------------------- one run
@dataclass
class RunSpec:
    """What one training run does.

    Attributes:
        dataset / arch: names from ``ee_rl.vision.data.DATASETS`` / ``ee_rl.vision.backbones.ARCHS``.
        out_dir: run directory (``backbone.pt``, ``exits-<variant>.pt``, ``tb/``, ``train_summary.json``).
        config: the recipe (see :func:`ee_rl.vision.config.load_vision_config`).
        data_dir: where the dataset's files are (not needed for digits).
        seed: backbone/head initialisation, batch order and — for digits — the train/test split.
        variants: exit variants to train heads for.
        device: torch device name.
        resume: reuse finished phases found in ``out_dir`` and continue an interrupted one.
        weights: pretrained backbone weights (torchvision ResNet-50 state dict, or an ee_rl ``backbone.pt``).
        transfer: with ``weights``: replace the final linear layer and train it for this dataset (ZTW B.3).
        progress: show progress bars.
    """

    dataset: str
    arch: str
    out_dir: Path
    config: VisionConfig
    data_dir: Path | None = None
    seed: int = 0
    variants: tuple[ExitMethod, ...] = (ZTW, SDN)
    device: str = "cpu"
    resume: bool = False
    weights: Path | None = None
    transfer: bool = False
    progress: bool = True
    extra_info: dict[str, Any] = field(default_factory=dict)


def _state_num_classes(state: dict[str, torch.Tensor], net: StagedNet) -> int:
    weight = net.final_linear().weight
    key = next(name for name, p in net.named_parameters() if p is weight)
    if key not in state:
        raise UserError(f"the weights have no {key!r} entry: not a {net.arch} backbone")
    return int(state[key].shape[0])


def load_weights(spec: RunSpec, data: VisionData) -> StagedNet:
    """The backbone from ``spec.weights``: a torchvision ResNet-50 state dict (``arch=resnet50``), an ee_rl
    ``backbone.pt``, or a raw state dict of the architecture; all loaded with ``strict=True``."""
    path = Path(spec.weights)
    if spec.arch == "resnet50":
        probe = load_torch(path, "weights file")
        if probe.get("kind") != BACKBONE_KIND:
            net = load_torchvision_resnet50(str(path), data.mean, data.std)
            num_classes = net.final_linear().out_features
            if not spec.transfer and num_classes != data.num_classes:
                raise UserError(
                    f"{path} predicts {num_classes} classes but {spec.dataset} has {data.num_classes}; "
                    "pass --transfer to train a new linear head"
                )
            return net
    record = load_torch(path, "weights file")
    state = record["state_dict"] if record.get("kind") == BACKBONE_KIND else record
    if record.get("kind") == BACKBONE_KIND and record.get("arch") != spec.arch:
        raise UserError(f"{path} holds a {record.get('arch')} backbone, not {spec.arch}")
    probe_net = build_backbone(spec.arch, data.num_classes, data.input_shape, data.mean, data.std)
    num_classes = _state_num_classes(state, probe_net)
    if not spec.transfer and num_classes != data.num_classes:
        raise UserError(
            f"{path} predicts {num_classes} classes but {spec.dataset} has {data.num_classes}; "
            "pass --transfer to train a new linear head"
        )
    net = build_backbone(spec.arch, num_classes, data.input_shape, data.mean, data.std)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{path} does not match {spec.arch}: {str(exc).splitlines()[0]}") from None
    return net


def _check_out_dir(out: Path, resume: bool) -> None:
    existing = sorted(p.name for p in out.glob("*.pt")) + sorted(p.name for p in out.glob("*.ckpt"))
    if existing and not resume:
        raise UserError(
            f"run directory {out} already holds {', '.join(existing[:4])}; pass --resume to reuse and continue it, "
            "or choose another --out"
        )


def _variant_seed(seed: int, variant: ExitMethod) -> int:
    return seed * 1_000 + zlib.crc32(variant.name.encode()) % 1_000


def train_run(spec: RunSpec) -> dict[str, Any]:
    """Run every phase of ``spec`` that is not finished yet; return (and write) ``train_summary.json``'s content."""
    # Arguments first, so a refused run leaves no output directory behind.
    if spec.transfer and spec.weights is None:
        raise UserError("--transfer needs --weights (the pretrained backbone to transfer)")
    check_dataset_source(spec.dataset, spec.data_dir)
    device = resolve_device(spec.device)
    out = ensure_writable_dir(spec.out_dir)
    lock = RunDirLock(out)  # one live process per run directory; released when this function returns
    _check_out_dir(out, spec.resume)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    cfg = spec.config
    data = load_dataset(
        spec.dataset, spec.data_dir, seed=spec.seed, num_workers=cfg.num_workers,
        image_size=cfg.image_size, resize=cfg.resize,
    )
    summary_path = out / "train_summary.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if (spec.resume and summary_path.is_file()) else {}
    summary.update({"dataset": spec.dataset, "arch": spec.arch, "seed": spec.seed, "device": str(device),
                    "config": cfg.to_dict(), "train_size": len(data.train), "test_size": len(data.test),
                    **spec.extra_info})
    timings = summary.setdefault("wall_time_s", {})
    writer = SummaryWriter(str(out / "tb"))
    try:
        net, record = _backbone_phase(spec, data, device, out, writer, timings)
        summary["backbone_test_accuracy"] = record["test_accuracy"]
        summary["backbone_source"] = record["source"]
        sample = torch.zeros(1, *data.input_shape, device=device)  # the backbone is on `device` already
        variants_summary = summary.setdefault("variants", {})
        for variant in spec.variants:
            exits_path = out / f"exits-{variant.name}.pt"
            if spec.resume and exits_path.is_file():
                continue
            torch.manual_seed(_variant_seed(spec.seed, variant))
            model = build_model(variant, net.frozen(), net.placement, data.num_classes, sample,
                                downsample=cfg.ic_downsample)  # on the backbone's device
            costs = model.exit_costs(sample)
            t0 = time.perf_counter()
            train_ics(model, variant, data, cfg, seed=spec.seed, device=device,
                      ckpt_path=out / f"ics-{variant.name}.ckpt", resume=spec.resume, writer=writer,
                      progress=spec.progress)
            timings[f"ics/{variant.name}"] = time.perf_counter() - t0
            ensemble_info: dict[str, float] = {}
            if model.ensembles is not None:
                t0 = time.perf_counter()
                cached, labels = collect_all_exits(model, data.train, cfg.eval_batch_size, device)
                ensemble_info = train_ensembles(
                    model.ensembles, cached.ic_log_probs, labels, cfg.ensembles, seed=spec.seed, device=device,
                    writer=writer, tag=f"ensembles/{variant.name}", progress=spec.progress,
                )
                timings[f"ensembles/{variant.name}"] = time.perf_counter() - t0
            outputs, targets = collect_all_exits(model, data.test, cfg.eval_batch_size, device)
            variants_summary[variant.name] = {
                "ic_test_accuracy": (outputs.ic_log_probs.argmax(-1) == targets).double().mean(1).mul(100).tolist(),
                "exit_test_accuracy": (outputs.exit_log_probs.argmax(-1) == targets).double().mean(1).mul(100).tolist(),
                "relative_costs": list(costs.relative),
                "ensemble_train": ensemble_info,
            }
            write_heads_file(exits_path, exits_record(model, variant, record, {
                "seed": spec.seed, "ic_downsample": cfg.ic_downsample, "config": cfg.to_dict(),
                "test_summary": variants_summary[variant.name],
            }))
            (out / f"ics-{variant.name}.ckpt").unlink(missing_ok=True)
            atomic_write_json(summary_path, summary)
    finally:
        writer.close()
    atomic_write_json(summary_path, summary)
    lock.release()
    return summary


def _backbone_phase(
    spec: RunSpec, data: VisionData, device: torch.device, out: Path, writer: SummaryWriter, timings: dict
) -> tuple[StagedNet, dict[str, Any]]:
    """Load a finished ``backbone.pt`` (resume), or train / load / transfer the backbone and save it."""
    path = out / "backbone.pt"
    cfg = spec.config
    if spec.resume and path.is_file():
        net, record = load_backbone(path)
        for key, want in (("dataset", spec.dataset), ("arch", spec.arch), ("seed", spec.seed)):
            if record.get(key) != want:
                raise UserError(f"{path} was trained with {key}={record.get(key)!r}, not {want!r}: use another --out")
        return net.to(device), record
    t0 = time.perf_counter()
    ckpt = out / "backbone.ckpt"
    if spec.weights is not None:
        net = load_weights(spec, data)
        source = f"weights:{Path(spec.weights).name}"
        if spec.transfer:
            train_new_head(net, data, cfg, seed=spec.seed, device=device, ckpt_path=ckpt, resume=spec.resume,
                           writer=writer, progress=spec.progress)
            source = f"transfer:{Path(spec.weights).name}"
    else:
        if cfg.backbone.epochs == 0:
            raise UserError(
                f"backbone.epochs is 0 for {spec.dataset}: pass --weights with a pretrained backbone "
                "(e.g. a torchvision ResNet-50 state dict) or set backbone.epochs"
            )
        net = build_backbone(spec.arch, data.num_classes, data.input_shape, data.mean, data.std, seed=spec.seed)
        train_backbone(net, data, cfg, seed=spec.seed, device=device, ckpt_path=ckpt, resume=spec.resume,
                       writer=writer, progress=spec.progress)
        source = "trained"
    net.to(device).eval()
    test_accuracy = accuracy(net, data.test, cfg.eval_batch_size, device)
    timings["backbone"] = time.perf_counter() - t0
    record = backbone_record(net, {
        "dataset": spec.dataset, "num_classes": data.num_classes, "input_shape": list(data.input_shape),
        "mean": list(data.mean), "std": list(data.std), "class_names": list(data.class_names), "seed": spec.seed,
        "test_accuracy": test_accuracy, "source": source, "config": cfg.to_dict(),
    })
    save_torch(path, record)
    ckpt.unlink(missing_ok=True)
    return net, record


DEFAULT_VARIANTS = (ZTW, SDN)
__all__ = [
    "DEFAULT_VARIANTS", "RunSpec", "SDN", "ZTW", "accuracy", "load_weights", "make_optimizer", "make_scheduler",
    "run_epochs", "train_backbone", "train_ensembles", "train_ics", "train_new_head", "train_run",
]
