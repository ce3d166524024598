"""Does the tolerance hold? Repeated calibration / test splits of real per-exit outputs, for SelfXit's point
estimate and the risk-controlled thresholds of :mod:`ee_rl.core.calibrate` (``scripts/risk_check.py``)."""
