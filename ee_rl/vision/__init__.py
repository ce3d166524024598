"""Supervised vision: ZTW, SDN and PBEE on CIFAR / Tiny ImageNet / ImageNet / digits backbones, on the shared core.

Modules: ``data`` (local datasets, batch iterators), ``backbones`` (staged ResNet-56, VGG-16-BN, MobileNet,
Wide-ResNet, torchvision-compatible ResNet-50), ``methods`` (the core exit methods' heads placed on these backbones),
``config`` (YAML recipes), ``checkpoint`` (``backbone.pt`` / ``exits-<method>.pt``), ``train`` (backbone, ICs,
ensembles; checkpoints and resume), ``evaluate`` (one all-exits pass → budget tables and Hindsight Improvability),
``stats`` (multi-seed means and paired differences), ``report`` (CSV, Markdown and plots), ``experiment`` (the
multi-seed run behind ``scripts/eval_vision.py``) and ``cli`` (the options both vision scripts share).
"""
