"""Early-exit core shared by the RL and vision parts.

Exit methods, heads, cascade, ensembles, the model builder and heads file, exit rules (and which rule each method
uses), conditional inference (eager, or ONNX Runtime segments), FLOPs, metrics and latency.
"""

from ee_rl.core.backbone import StagedBackbone, UInt8ToUnitFloat
from ee_rl.core.batched import all_exits_batched
from ee_rl.core.builder import build_early_exit_model
from ee_rl.core.ensemble import AdditiveEnsemble, Ensemble, GeometricEnsemble, make_ensembles
from ee_rl.core.exits import EntropyExit, ExitRule, MaxProbExit, PatienceExit, PerExitThresholds, assign_exits
from ee_rl.core.flops import ExitCosts, count_flops, measure_exit_costs
from ee_rl.core.heads import InternalClassifier, SDNPool, make_internal_classifiers
from ee_rl.core.heads_file import heads_payload, load_heads_state, read_heads_file, write_heads_file
from ee_rl.core.latency import ExitLatency, forced_exit_rule, measure_exit_latency, median_call_us
from ee_rl.core.method import ExitMethod, exit_method, method_by_name
from ee_rl.core.metrics import (
    OperatingPoint,
    budget_table,
    evaluate_rule,
    hindsight_improvability,
    score_cost_curve,
    select_cheapest_within_drop,
    select_within_budget,
)
from ee_rl.core.model import (
    AllExits,
    EarlyExitModel,
    EarlyExitOutput,
    ExitChunk,
    concat_all_exits,
    simulate_inference,
)
from ee_rl.core.rules import (
    CONFIDENCE_METHODS,
    FULL,
    FULL_RULE,
    PATIENCE_METHODS,
    RULE_METHODS,
    is_patience_method,
    rule_for_method,
)
from ee_rl.core.runtime import RUNTIMES, ConditionalInference, make_runner

__all__ = [
    "CONFIDENCE_METHODS",
    "FULL",
    "FULL_RULE",
    "PATIENCE_METHODS",
    "RULE_METHODS",
    "RUNTIMES",
    "AdditiveEnsemble",
    "AllExits",
    "ConditionalInference",
    "EarlyExitModel",
    "EarlyExitOutput",
    "Ensemble",
    "EntropyExit",
    "ExitChunk",
    "ExitCosts",
    "ExitLatency",
    "ExitMethod",
    "ExitRule",
    "GeometricEnsemble",
    "InternalClassifier",
    "MaxProbExit",
    "OperatingPoint",
    "PatienceExit",
    "PerExitThresholds",
    "SDNPool",
    "StagedBackbone",
    "UInt8ToUnitFloat",
    "all_exits_batched",
    "assign_exits",
    "budget_table",
    "build_early_exit_model",
    "concat_all_exits",
    "count_flops",
    "evaluate_rule",
    "exit_method",
    "forced_exit_rule",
    "heads_payload",
    "hindsight_improvability",
    "is_patience_method",
    "load_heads_state",
    "make_ensembles",
    "make_internal_classifiers",
    "make_runner",
    "measure_exit_costs",
    "measure_exit_latency",
    "median_call_us",
    "method_by_name",
    "read_heads_file",
    "rule_for_method",
    "score_cost_curve",
    "select_cheapest_within_drop",
    "select_within_budget",
    "simulate_inference",
    "write_heads_file",
]
