"""Export an :class:`EarlyExitModel` to ONNX as one graph per segment, and cache the files by a hash of the model.

One ONNX graph cannot stop part-way (every exit of a static graph is computed), so conditional inference in a
compiled runtime needs the network cut where the exits are. Segment ``m`` (``0 <= m < M``) runs the backbone stages
after exit ``m - 1``'s stage up to and including the stage IC ``m`` is attached after (with the preprocess for
``m = 0``), then IC ``m`` (with its cascade input) and ensemble ``m``. It returns the stage's features, the IC's raw
logits (the next IC's cascade input), its log-probabilities (the next ensembles' members) and, with ensembles, the
exit's log-probabilities. The final segment runs the remaining stages and the backbone's head (logits and
log-probabilities); a separate
``backbone`` graph is the whole network in one piece (the rule that never exits early, and the latency baseline).

Files live in ``<cache_dir>/<key>/`` with a ``manifest.json`` holding every file's SHA-256; ``key`` hashes the
weights, the wiring, the input's per-sample shape and dtype, and the exporter's versions. A file that is missing,
does not match its manifest or was written for another model is re-exported, never used (see
:func:`load_or_export_segments`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ee_rl.core.fingerprint import file_sha256, state_dict_sha256
from ee_rl.core.model import EarlyExitModel
from ee_rl.errors import UserError

log = logging.getLogger(__name__)

#: Bumped whenever the segment graphs' inputs, outputs or contents change: old caches are then re-exported.
EXPORT_FORMAT = 3
#: ONNX opset of the exported graphs.
OPSET = 18
MANIFEST = "manifest.json"
BACKBONE = "backbone"


def segment_name(m: int) -> str:
    """File stem of segment ``m`` (``M`` = the final segment)."""
    return f"segment{m}"


@dataclass(frozen=True)
class SegmentSpec:
    """Inputs and outputs of one exported segment (names of the ONNX graph's inputs and outputs, in order)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def segment_specs(model: EarlyExitModel) -> list[SegmentSpec]:
    """The segments :func:`export_segments` writes for ``model``: M exit segments, the final one, the backbone."""
    specs = []
    has_ensembles = model.ensembles is not None
    for m in range(model.num_ics):
        inputs = ["x" if m == 0 else "features_in"]
        if model.heads[m].cascade_in:
            inputs.append("prev_logits")
        if has_ensembles:
            inputs += [f"member{j}" for j in range(m)]
        outputs = ["features", "logits", "log_probs"] + (["exit_log_probs"] if has_ensembles else [])
        specs.append(SegmentSpec(segment_name(m), tuple(inputs), tuple(outputs)))
    specs.append(SegmentSpec(segment_name(model.num_ics), ("features_in",), ("logits", "log_probs")))
    specs.append(SegmentSpec(BACKBONE, ("x",), ("log_probs",)))
    return specs


def traceable(module: nn.Module) -> nn.Module:
    """``module.onnx_equivalent()`` if it offers one (same values, ops an exporter can trace), else ``module``."""
    equivalent = getattr(module, "onnx_equivalent", None)
    return equivalent() if callable(equivalent) else module


class _ExitSegment(nn.Module):
    """Segment m: stages ``first..last`` (after the preprocess if m = 0), IC m and ensemble m."""

    def __init__(self, model: EarlyExitModel, m: int) -> None:
        super().__init__()
        start = 0 if m == 0 else model.attach_after[m - 1] + 1
        self.preprocess = traceable(model.backbone.preprocess) if m == 0 else nn.Identity()
        self.stages = nn.ModuleList(model.backbone.stages[start : model.attach_after[m] + 1])
        self.head = model.heads[m]
        self.ensemble = model.ensembles[m] if model.ensembles is not None else None
        self.cascade = bool(model.heads[m].cascade_in)

    def forward(self, h: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.preprocess(h)
        for stage in self.stages:
            h = stage(h)
        prev_logits = rest[0] if self.cascade else None
        members = list(rest[1:] if self.cascade else rest)
        logits = self.head(h, prev_logits)
        log_probs = torch.log_softmax(logits, dim=-1)
        if self.ensemble is None:
            return h, logits, log_probs
        return h, logits, log_probs, self.ensemble([*members, log_probs])


class _FinalSegment(nn.Module):
    """The stages after the last exit and the backbone's head, as log-probabilities."""

    def __init__(self, model: EarlyExitModel) -> None:
        super().__init__()
        self.stages = nn.ModuleList(model.backbone.stages[model.attach_after[-1] + 1 :])
        self.head = model.backbone.head

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for stage in self.stages:
            h = stage(h)
        logits = self.head(h)
        return logits, torch.log_softmax(logits, dim=-1)


class _WholeBackbone(nn.Module):
    def __init__(self, model: EarlyExitModel) -> None:
        super().__init__()
        self.preprocess = traceable(model.backbone.preprocess)
        self.stages = nn.ModuleList(model.backbone.stages)
        self.head = model.backbone.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.preprocess(x)
        for stage in self.stages:
            h = stage(h)
        return torch.log_softmax(self.head(h), dim=-1)


def export_key(model: EarlyExitModel, sample: torch.Tensor) -> str:
    """Hex digest naming the exported files of ``model`` for inputs shaped like ``sample`` (one row is enough).

    Covers the weights (heads, ensembles and backbone), the module classes and wiring, the per-sample input shape and
    dtype, the export format and the torch / onnx opset versions: any change gives a new key.
    """
    digest = hashlib.sha256()
    digest.update(state_dict_sha256(model.state_dict()).encode())
    wiring = {
        "format": EXPORT_FORMAT,
        "opset": OPSET,
        "torch": torch.__version__,
        "attach_after": list(model.attach_after),
        "cascade": [int(getattr(h, "cascade_in", 0)) for h in model.heads],
        "modules": repr(model),  # classes, shapes, strides: what the weights alone do not say
        "input": [list(sample.shape[1:]), str(sample.dtype)],
    }
    digest.update(json.dumps(wiring, sort_keys=True).encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints, warnings and log lines (they are not the user's business)."""
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


def require_exporter() -> None:
    """Raise a one-line :class:`UserError` naming the extra to install if the exporter's packages are missing."""
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            raise UserError(
                f"exporting to ONNX needs the '{module}' package: pip install 'ee_rl[onnx]'"
            ) from None


def export_segments(model: EarlyExitModel, sample: torch.Tensor, out_dir: str | Path) -> dict[str, str]:
    """Write every segment of ``model`` (see :func:`segment_specs`) as ``<out_dir>/<name>.onnx``.

    ``sample`` is a raw input batch (on the CPU) that fixes the per-sample shape; the batch dimension is dynamic.
    The model itself is not touched: a deep copy is traced (tracing would leave traced values in the modules' caches).
    Returns ``{name: sha256}`` of the files written.
    """
    require_exporter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).cpu().eval()
    # Trace the differentiable paths: without gradients some modules read constants cached from their parameters
    # (see :class:`ee_rl.core.param_cache.DerivedConstant`), which a tracer cannot follow.
    for p in model.parameters():
        p.requires_grad_(True)
    for module in model.modules():
        prepare = getattr(module, "prepare_for_export", None)
        if callable(prepare):
            prepare()
    _fold_input_scale(model)
    x = sample[:2].cpu() if sample.shape[0] >= 2 else sample.cpu().expand(2, *sample.shape[1:]).contiguous()
    batch = torch.export.Dim("batch", min=1)
    specs = segment_specs(model)
    with torch.enable_grad():
        features, logits, log_probs = [], [], []
        h = x
        for m in range(model.num_ics):
            segment = _ExitSegment(model, m).eval()
            args = [h]
            if segment.cascade:
                args.append(logits[-1])
            if model.ensembles is not None:
                args += log_probs
            outputs = segment(*args)
            _export(segment, tuple(args), specs[m], out_dir, batch)
            h = outputs[0]
            features.append(h)
            logits.append(outputs[1])
            log_probs.append(outputs[2])
        _export(_FinalSegment(model).eval(), (h,), specs[-2], out_dir, batch)
        _export(_WholeBackbone(model).eval(), (x,), specs[-1], out_dir, batch)
    return {spec.name: file_sha256(out_dir / f"{spec.name}.onnx") for spec in specs}


def _first_conv(stage: nn.Module) -> nn.Conv2d | None:
    """The convolution a stage starts with (itself, or the first module of a Sequential), if it does."""
    while isinstance(stage, nn.Sequential) and len(stage) > 0:
        stage = stage[0]
    return stage if isinstance(stage, nn.Conv2d) else None


def _fold_input_scale(model: EarlyExitModel) -> None:
    """Fold a preprocess that only scales (``foldable_scale()``, e.g. pixels / 255) into the first convolution's
    weights: one elementwise op less on the whole input of segment 0 and of the backbone graph. Exact up to float
    rounding, as zero padding stays zero under a scaling. ``model`` is the export's own copy."""
    foldable = getattr(model.backbone.preprocess, "foldable_scale", None)
    conv = _first_conv(model.backbone.stages[0])
    if not callable(foldable) or conv is None:
        return
    scale, replacement = foldable()
    with torch.no_grad():
        conv.weight.mul_(scale)
    model.backbone.preprocess = replacement


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], spec: SegmentSpec, out_dir: Path, batch) -> None:
    dynamic: tuple = tuple({0: batch} for _ in args)
    if isinstance(module, _ExitSegment) and len(args) > 1:  # forward(h, *rest): torch.export sees (h, rest)
        dynamic = (dynamic[0], dynamic[1:])
    path = out_dir / f"{spec.name}.onnx"
    with _quiet_exporter():
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=list(spec.inputs), output_names=list(spec.outputs),
            dynamic_shapes=dynamic, opset_version=OPSET, optimize=True, verbose=False,
        )
        program.save(str(path))


def _read_manifest(directory: Path) -> dict | None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def cached_segments_valid(directory: Path, key: str, names: list[str]) -> str | None:
    """None if ``directory`` holds this model's segments intact, else why not (one short phrase)."""
    manifest = _read_manifest(directory)
    if manifest is None:
        return "no readable manifest"
    if manifest.get("key") != key or manifest.get("format") != EXPORT_FORMAT:
        return "exported for another model"
    files = manifest.get("files", {})
    for name in names:
        path = directory / f"{name}.onnx"
        if not path.is_file():
            return f"{path.name} is missing"
        if files.get(name) != file_sha256(path):
            return f"{path.name} does not match its manifest (stale or corrupt)"
    return None


def default_cache_dir() -> Path:
    """Where exported graphs go when the folder beside the model cannot be written: ``~/.cache/ee_rl/onnx``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "ee_rl" / "onnx"


def _writable(directory: Path) -> bool:
    probe = directory
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK)


def load_or_export_segments(
    model: EarlyExitModel, sample: torch.Tensor, cache_dir: str | Path | None, *, force: bool = False
) -> Path:
    """The folder holding ``model``'s segment graphs for inputs like ``sample``, exporting them if needed.

    Files are looked up in ``<cache_dir>/<key>/`` (``cache_dir`` None or not writable: :func:`default_cache_dir`). A
    folder whose manifest or files do not match is exported again (written to a temporary folder, then moved into
    place, so a reader never sees half a cache); ``force`` exports again whatever the folder holds (e.g. after
    ONNX Runtime refused a file). Returns the folder.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not _writable(root):
        root = default_cache_dir()
    key = export_key(model, sample)
    directory = root / key[:24]
    names = [spec.name for spec in segment_specs(model)]
    problem = "re-export asked for" if force else cached_segments_valid(directory, key, names)
    if problem is None:
        return directory
    if directory.exists():
        log.warning("re-exporting the ONNX segments in %s: %s", directory, problem)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    try:
        files = export_segments(model, sample, tmp)
        manifest = {"key": key, "format": EXPORT_FORMAT, "opset": OPSET, "torch": torch.__version__, "files": files,
                    "segments": [{"name": s.name, "inputs": list(s.inputs), "outputs": list(s.outputs)}
                                 for s in segment_specs(model)]}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if not force and cached_segments_valid(directory, key, names) is None:
            return directory  # another process (e.g. a parallel sweep worker) exported it meanwhile
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
        try:
            os.replace(tmp, directory)
        except OSError:
            if cached_segments_valid(directory, key, names) is not None:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory
