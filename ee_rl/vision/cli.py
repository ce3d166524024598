"""Command-line options shared by the vision scripts (``scripts/train_vision.py``, ``scripts/eval_vision.py``)."""

from __future__ import annotations

import argparse

from ee_rl.errors import UserError


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add the options every vision script takes: what to run on (``--dataset``, ``--arch``, ``--data-dir``),
    where (``--device``, ``--threads``), the recipe (``--config``, ``--set``) and ``--no-progress-bar``."""
    parser.add_argument("--dataset", required=True,
                        help="cifar10, cifar100, cifar2, tinyimagenet, imagenet, imagefolder, digits, digits-noisy")
    parser.add_argument("--arch", default=None,
                        help="resnet56, vgg16_bn, mobilenet, wrn32_4, resnet50, small_cnn, ... (default: resnet56 on "
                             "CIFAR/Tiny ImageNet, resnet50 on ImageNet and image folders, resnet20_w8 on digits)")
    parser.add_argument("--data-dir", default=None, help="folder holding the dataset's files (not needed for digits)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--config", default=None, help="YAML recipe (default configs/vision.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set ics.epochs=5 (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-progress-bar", action="store_true", help="for logs of background runs")


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op threads to ``--threads`` (None: leave torch's default); below 1 is a :class:`UserError`."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    import torch  # not at module level: the scripts parse their arguments before the heavy imports

    torch.set_num_threads(threads)
