"""EarlyExitModel: a frozen staged backbone with internal classifiers, (optional) ensembles and conditional inference.

All outputs are log-probabilities (log-softmax of logits; ensembles output log-distributions directly). Exit indices
are 0-based: ``0..M-1`` for the M internal exits, ``M`` for the backbone's own head.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ee_rl.core.backbone import StagedBackbone
from ee_rl.core.exits import ExitRule, assign_exits
from ee_rl.core.flops import ExitCosts, measure_exit_costs


@dataclass(frozen=True)
class EarlyExitOutput:
    """What conditional inference answers, per sample.

    Attributes:
        log_probs: ``(B, K)`` log-probabilities of the exit that answered.
        exit_index: ``(B,)`` long, 0-based exit index (``M`` = the backbone's own head).
        flops: ``(B,)`` long, FLOPs spent on each sample (see :mod:`ee_rl.core.flops` for the convention).
    """

    log_probs: torch.Tensor
    exit_index: torch.Tensor
    flops: torch.Tensor


class ExitChunk(NamedTuple):
    """The samples of a batch that one exit answered, as :meth:`EarlyExitModel.infer_iter` hands them over.

    Attributes:
        exit_index: 0-based exit that answered them (``M`` = the backbone's own head).
        rows: ``(n,)`` long, their indices in the original batch (ascending; read-only: it may be shared).
        log_probs: ``(n, K)`` their log-probabilities, row ``i`` for sample ``rows[i]``.
        flops: FLOPs each of them cost (one number: every sample answered at the same exit paid the same).
    """

    exit_index: int
    rows: torch.Tensor
    log_probs: torch.Tensor
    flops: int


@dataclass(frozen=True)
class AllExits:
    """Every exit's output for a batch, from one pass that runs everything.

    Attributes:
        ic_logits: ``(M, B, K)`` raw logits of each IC.
        ic_log_probs: ``(M, B, K)`` log-softmax of each IC.
        ensemble_log_probs: ``(M, B, K)`` log-probs of ensemble m (over ICs 0..m), or None without ensembles.
        final_logits: ``(B, K)`` the backbone head's logits.
        final_log_probs: ``(B, K)`` their log-softmax.
    """

    ic_logits: torch.Tensor
    ic_log_probs: torch.Tensor
    ensemble_log_probs: torch.Tensor | None
    final_logits: torch.Tensor
    final_log_probs: torch.Tensor

    @property
    def num_ics(self) -> int:
        """M, the number of internal exits."""
        return self.ic_log_probs.shape[0]

    @property
    def exit_log_probs(self) -> torch.Tensor:
        """``(M, B, K)`` what each internal exit answers: the ensemble's output if present, else the IC's."""
        return self.ic_log_probs if self.ensemble_log_probs is None else self.ensemble_log_probs

    @property
    def answer_log_probs(self) -> torch.Tensor:
        """``(M + 1, B, K)`` what every exit answers, the backbone head last."""
        return torch.cat((self.exit_log_probs, self.final_log_probs.unsqueeze(0)), dim=0)


def concat_all_exits(parts: Sequence[AllExits]) -> AllExits:
    """Concatenate batch-wise :class:`AllExits` (e.g. of chunks of a dataset) along the sample dimension."""
    if not parts:
        raise ValueError("concat_all_exits needs at least one AllExits")
    ens = None if parts[0].ensemble_log_probs is None else torch.cat([p.ensemble_log_probs for p in parts], dim=1)
    return AllExits(
        ic_logits=torch.cat([p.ic_logits for p in parts], dim=1),
        ic_log_probs=torch.cat([p.ic_log_probs for p in parts], dim=1),
        ensemble_log_probs=ens,
        final_logits=torch.cat([p.final_logits for p in parts]),
        final_log_probs=torch.cat([p.final_log_probs for p in parts]),
    )


def simulate_inference(outputs: AllExits, rule: ExitRule, costs: ExitCosts) -> EarlyExitOutput:
    """Pure function: what :meth:`EarlyExitModel.infer` would answer under ``rule``, from one all-exits pass.

    Use it to sweep many thresholds with a single forward pass. Exit indices equal ``infer``'s (both apply
    ``rule.should_exit`` to the same rows; only a confidence within float rounding of a threshold could differ,
    because BLAS kernels are not bit-identical across batch sizes).
    """
    if not isinstance(rule, ExitRule):
        raise ValueError(f"rule must be an ExitRule (e.g. MaxProbExit(0.9)), got {type(rule).__name__}")
    if len(costs.ics) != outputs.num_ics:
        raise ValueError(f"costs describe {len(costs.ics)} ICs but the outputs have {outputs.num_ics}")
    exit_index = assign_exits(outputs.exit_log_probs, rule)
    batch = torch.arange(exit_index.shape[0], device=exit_index.device)
    log_probs = outputs.answer_log_probs[exit_index, batch]
    return EarlyExitOutput(log_probs, exit_index, costs.per_sample(exit_index, rule.never_exits_early))


class EarlyExitModel(nn.Module):
    """A frozen :class:`StagedBackbone` with internal classifiers after chosen stages, and optional ensembles.

    Args:
        backbone: the frozen staged backbone (its parameters never change).
        heads: M internal classifiers; ``heads[m](h, prev_logits)`` maps the output of stage ``attach_after[m]``
            (plus, when ``heads[m].cascade_in > 0``, IC m-1's logits) to K logits. See
            :class:`ee_rl.core.heads.InternalClassifier`.
        ensembles: None, or M ensembles where ``ensembles[m]`` combines the log-probs of ICs ``0..m``
            (see :mod:`ee_rl.core.ensemble`).
        attach_after: 0-based stage index each head is attached after, strictly increasing.
    """

    def __init__(
        self,
        backbone: StagedBackbone,
        heads: Sequence[nn.Module],
        ensembles: Sequence[nn.Module] | None,
        attach_after: Sequence[int],
    ) -> None:
        super().__init__()
        if not isinstance(backbone, StagedBackbone):
            raise ValueError(f"backbone must be a StagedBackbone, got {type(backbone).__name__}")
        heads = list(heads)
        attach_after = list(attach_after)
        if not heads:
            raise ValueError("EarlyExitModel needs at least one internal classifier head")
        if len(heads) != len(attach_after):
            raise ValueError(
                f"got {len(heads)} heads but {len(attach_after)} attach_after entries; give one stage index per head"
            )
        for i, s in enumerate(attach_after):
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < backbone.num_stages:
                raise ValueError(f"attach_after[{i}] must be a stage index in 0..{backbone.num_stages - 1}, got {s!r}")
        if any(b <= a for a, b in zip(attach_after, attach_after[1:])):
            raise ValueError(f"attach_after must be strictly increasing (one head per stage), got {attach_after}")
        num_classes = {getattr(h, "num_classes", None) for h in heads} - {None}
        if len(num_classes) > 1:
            raise ValueError(f"all heads must predict the same number of classes, got {sorted(num_classes)}")
        if getattr(heads[0], "cascade_in", 0):
            raise ValueError("the first head cannot have a cascade input (there is no previous IC): use cascade_in=0")
        if ensembles is not None:
            ensembles = list(ensembles)
            if len(ensembles) != len(heads):
                raise ValueError(f"got {len(ensembles)} ensembles for {len(heads)} heads; give one per head, or None")
            for m, e in enumerate(ensembles):
                if getattr(e, "num_members", m + 1) != m + 1:
                    raise ValueError(
                        f"ensembles[{m}] must combine {m + 1} ICs (0..{m}), it has {e.num_members} members"
                    )
        self.backbone = backbone
        self.heads = nn.ModuleList(heads)
        self.ensembles = nn.ModuleList(ensembles) if ensembles is not None else None
        self.attach_after = tuple(attach_after)
        ic_at_stage = [-1] * backbone.num_stages
        for m, s in enumerate(attach_after):
            ic_at_stage[s] = m
        self._ic_at_stage = tuple(ic_at_stage)
        self._cascade = tuple(bool(getattr(h, "cascade_in", 0)) for h in heads)
        self._costs: dict[tuple, tuple[ExitCosts, tuple[int, ...], torch.Tensor]] = {}
        self._all_rows: dict[tuple[int, torch.device], torch.Tensor] = {}
        # Plain tuples of the same module objects for the batch-1 hot path: nn.Module attribute lookups and
        # ModuleList indexing cost ~1 µs each, and a decision at batch 1 takes only a few hundred µs.
        self._hot = (backbone.preprocess, tuple(backbone.stages), tuple(heads), backbone.head,
                     None if ensembles is None else tuple(ensembles))

    @property
    def num_ics(self) -> int:
        """M, the number of internal classifiers; the backbone's head is exit index M."""
        return len(self.heads)

    def exit_costs(self, x: torch.Tensor) -> ExitCosts:
        """FLOPs of every part for inputs shaped like the raw batch ``x`` (measured at batch 1, cached per shape)."""
        return self._cost_entry(x)[0]

    def _cost_entry(self, x: torch.Tensor) -> tuple[ExitCosts, tuple[int, ...], torch.Tensor]:
        key = (x.shape[1:], x.dtype, x.device)
        entry = self._costs.get(key)
        if entry is None:
            if x.shape[0] == 0:
                raise ValueError("cannot measure FLOPs on an empty batch; pass at least one sample")
            costs = measure_exit_costs(self.backbone, self.heads, self.ensembles, self.attach_after, x[:1])
            cumulative = costs.cumulative
            entry = (costs, cumulative, torch.tensor(cumulative, dtype=torch.long, device=x.device))
            self._costs[key] = entry
        return entry

    def forward(self, x: torch.Tensor) -> AllExits:
        """Same as :meth:`all_exits`."""
        return self.all_exits(x)

    def all_exits(self, x: torch.Tensor, *, ensemble_grad_to_heads: bool = False) -> AllExits:
        """Run the whole backbone and every head and ensemble on the batch (for training and threshold sweeps).

        Respects the current grad mode. Ensembles see detached IC log-probs unless ``ensemble_grad_to_heads``
        (ZTW trains ensembles on top of already-trained ICs, so an ensemble's loss should not move the ICs).
        """
        h = self.backbone.preprocess(x)
        acc = _ExitAccumulator(self, ensemble_grad_to_heads)
        for s, stage in enumerate(self.backbone.stages):
            h = stage(h)
            if self._ic_at_stage[s] >= 0:
                acc.add(h)  # heads run as soon as their stage has, so stage outputs are freed as we go
        return acc.finish(self.backbone.head(h))

    def attached_stage_outputs(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run the frozen backbone once: the outputs of the stages the heads attach to (in head order) and the
        backbone head's logits. Everything the heads need, so training can cache it across epochs (the backbone is
        frozen) and call :meth:`exits_from_stage_outputs` instead of re-running the backbone."""
        h = self.backbone.preprocess(x)
        features: list[torch.Tensor] = []
        for s, stage in enumerate(self.backbone.stages):
            h = stage(h)
            if self._ic_at_stage[s] >= 0:
                features.append(h)
        return features, self.backbone.head(h)

    def exits_from_stage_outputs(
        self,
        features: Sequence[torch.Tensor],
        final_logits: torch.Tensor,
        *,
        ensemble_grad_to_heads: bool = False,
    ) -> AllExits:
        """What :meth:`all_exits` answers, from the results of :meth:`attached_stage_outputs` (runs heads only).

        ``features[m]`` is the output of stage ``attach_after[m]``; same cascade wiring, ensembles and grad rules
        as :meth:`all_exits`, so ``exits_from_stage_outputs(*attached_stage_outputs(x))`` equals ``all_exits(x)``.
        """
        if len(features) != len(self.heads):
            raise ValueError(f"got {len(features)} stage outputs for {len(self.heads)} heads; give one per head")
        acc = _ExitAccumulator(self, ensemble_grad_to_heads)
        for h in features:
            acc.add(h)
        return acc.finish(final_logits)

    def infer(self, x: torch.Tensor, rule: ExitRule) -> EarlyExitOutput:
        """Conditional inference with batch shrinking: samples that exit leave the batch; the rest go on.

        Stage by stage; after a stage with an IC, compute the IC (and its ensemble) on the still-active rows, answer
        the rows ``rule`` lets out and continue with the others (``index_select``). With a rule that never exits
        early no head runs and the answer is exactly ``log_softmax(backbone(x))``. This gathers the chunks of
        :meth:`infer_iter` (the one batch-shrinking loop) into per-sample outputs. Runs in inference mode.
        """
        self._check_infer_args(x, rule)
        if torch.is_inference_mode_enabled():  # entering it again costs a few µs per call
            return self._gather_chunks(x, rule)
        with torch.inference_mode():
            return self._gather_chunks(x, rule)

    def _gather_chunks(self, x: torch.Tensor, rule: ExitRule) -> EarlyExitOutput:
        n = x.shape[0]
        chunks = self._exit_chunks(x, rule)
        first = next(chunks)
        if first.rows.shape[0] == n:
            # Everyone leaves together (always the case at batch 1): no scatter needed.
            return EarlyExitOutput(
                first.log_probs,
                torch.full((n,), first.exit_index, dtype=torch.long, device=x.device),
                torch.full((n,), first.flops, dtype=torch.long, device=x.device),
            )
        out_log_probs = first.log_probs.new_empty((n, first.log_probs.shape[1]))
        out_exit = torch.empty((n,), dtype=torch.long, device=x.device)
        for chunk in itertools.chain((first,), chunks):
            out_log_probs.index_copy_(0, chunk.rows, chunk.log_probs)
            out_exit.index_fill_(0, chunk.rows, chunk.exit_index)
        return EarlyExitOutput(out_log_probs, out_exit, self._cost_entry(x)[2][out_exit])

    def infer_iter(self, x: torch.Tensor, rule: ExitRule) -> Iterator[ExitChunk]:
        """Conditional inference that hands over each exit's answers as soon as that exit has run (for streaming).

        Same computation as :meth:`infer` (batch shrinking, same rows, same numbers): yields one :class:`ExitChunk`
        per exit that answered at least one sample, in increasing exit order; the chunks' ``rows`` partition
        ``0..B-1``. Arguments are checked now (``ValueError``), not at the first ``next``. Runs in inference mode.
        """
        self._check_infer_args(x, rule)
        return self._exit_chunks_in_inference_mode(x, rule)

    def _check_infer_args(self, x: torch.Tensor, rule: ExitRule) -> None:
        if not isinstance(rule, ExitRule):
            raise ValueError(f"rule must be an ExitRule (e.g. MaxProbExit(0.9)), got {type(rule).__name__}")
        rule.check_num_ics(len(self._hot[2]))  # the heads, without nn.Module attribute lookups
        if x.shape[0] == 0:
            raise ValueError("infer needs a batch with at least one sample, got an empty batch")

    @torch.inference_mode()
    def _exit_chunks_in_inference_mode(self, x: torch.Tensor, rule: ExitRule) -> Iterator[ExitChunk]:
        # The decorator re-enters inference mode at every resumption of the generator.
        yield from self._exit_chunks(x, rule)

    def _rows_of_whole_batch(self, n: int, device: torch.device) -> torch.Tensor:
        # ``arange(n)``, cached: at batch 1 one op more per call is measurable, and batch sizes repeat.
        key = (n, device)
        rows = self._all_rows.get(key)
        if rows is None:
            if len(self._all_rows) >= 256:
                self._all_rows.clear()
            with torch.inference_mode():
                rows = self._all_rows[key] = torch.arange(n, device=device)
        return rows

    def _exit_chunks(self, x: torch.Tensor, rule: ExitRule) -> Iterator[ExitChunk]:
        """The batch-shrinking loop (caller checks arguments and sets inference mode)."""
        preprocess, stages, heads, final_head, ensembles = self._hot
        num_ics = len(heads)
        n = x.shape[0]
        costs, cumulative, _ = self._cost_entry(x)
        device = x.device
        if rule.never_exits_early:
            log_probs = torch.log_softmax(self.backbone(x), dim=-1)
            yield ExitChunk(num_ics, self._rows_of_whole_batch(n, device), log_probs, costs.backbone)
            return

        cascade, ic_at_stage = self._cascade, self._ic_at_stage
        needs_history = rule.needs_history
        history = torch.empty((n, 0), dtype=torch.long, device=device) if needs_history else None
        members: list[torch.Tensor] = []
        prev_logits: torch.Tensor | None = None
        active: torch.Tensor | None = None  # original row ids still running; None = all rows, in order
        n_active = n

        h = preprocess(x)
        for s, stage in enumerate(stages):
            h = stage(h)
            m = ic_at_stage[s]
            if m < 0:
                continue
            logits = heads[m](h, prev_logits if cascade[m] else None)
            log_probs = torch.log_softmax(logits, dim=-1)
            if ensembles is not None:
                members.append(log_probs)
                log_probs = ensembles[m](members)
            leave = rule.should_exit(m, log_probs, history)
            if needs_history:
                history = torch.cat((history, log_probs.argmax(dim=-1, keepdim=True)), dim=1)
            # The one host sync per exit (at batch 1 skip the reduction: one op less).
            n_leave = int(leave.sum()) if n_active != 1 else int(leave)
            if n_leave:
                if n_leave == n_active:
                    # Everyone still running leaves here (always the case at batch 1): no row selection needed.
                    rows = self._rows_of_whole_batch(n, device) if active is None else active
                    yield ExitChunk(m, rows, log_probs, cumulative[m])
                    return
                rows = leave.nonzero().squeeze(1)
                ids = rows if active is None else active.index_select(0, rows)
                yield ExitChunk(m, ids, log_probs.index_select(0, rows), cumulative[m])
                keep = (~leave).nonzero().squeeze(1)
                active = keep if active is None else active.index_select(0, keep)
                n_active -= n_leave
                h = h.index_select(0, keep)
                logits = logits.index_select(0, keep)
                members = [t.index_select(0, keep) for t in members]
                if history is not None:
                    history = history.index_select(0, keep)
            prev_logits = logits

        log_probs = torch.log_softmax(final_head(h), dim=-1)
        rows = self._rows_of_whole_batch(n, device) if active is None else active
        yield ExitChunk(num_ics, rows, log_probs, cumulative[num_ics])


class _ExitAccumulator:
    """Runs the heads (and ensembles) of one all-exits pass in order, one attached stage output at a time.

    The one place that wires cascades and ensembles for training-style passes, shared by
    :meth:`EarlyExitModel.all_exits` and :meth:`EarlyExitModel.exits_from_stage_outputs`.
    """

    def __init__(self, model: EarlyExitModel, ensemble_grad_to_heads: bool) -> None:
        self.model = model
        self.ensemble_grad_to_heads = ensemble_grad_to_heads
        self.ic_logits: list[torch.Tensor] = []
        self.ic_log_probs: list[torch.Tensor] = []
        self.ens_log_probs: list[torch.Tensor] = []

    def add(self, h: torch.Tensor) -> None:
        """Run the next head on its stage's output ``h`` (cascade input: the previous head's logits)."""
        m = len(self.ic_logits)
        model = self.model
        logits = model.heads[m](h, self.ic_logits[-1] if model._cascade[m] else None)
        self.ic_logits.append(logits)
        self.ic_log_probs.append(torch.log_softmax(logits, dim=-1))
        if model.ensembles is not None:
            members = self.ic_log_probs if self.ensemble_grad_to_heads else [t.detach() for t in self.ic_log_probs]
            self.ens_log_probs.append(model.ensembles[m](members))

    def finish(self, final_logits: torch.Tensor) -> AllExits:
        """Everything gathered so far, with the backbone head's ``final_logits``."""
        return AllExits(
            ic_logits=torch.stack(self.ic_logits),
            ic_log_probs=torch.stack(self.ic_log_probs),
            ensemble_log_probs=torch.stack(self.ens_log_probs) if self.model.ensembles is not None else None,
            final_logits=final_logits,
            final_log_probs=torch.log_softmax(final_logits, dim=-1),
        )
