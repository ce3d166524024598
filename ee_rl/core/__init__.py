"""Early-exit core shared by the RL and vision parts: heads, cascade, ensembles, exit rules, inference, FLOPs, metrics."""
