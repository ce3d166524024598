"""SelfXit (TMLR 2024): label-free exit heads, temperature calibration, per-exit thresholds from a tolerated accuracy
drop, exit-subset selection and latency vs batch size, for vision backbones and PPO experts.

The shared math lives in the core (:mod:`ee_rl.core.calibrate`, :mod:`ee_rl.core.head_search`); this package holds
the drivers: ``settings`` (``configs/selfxit.yaml``), ``pipeline`` (medial datasets, heads, calibration, subset),
``evaluate`` (held-out accuracy / agreement / inference time), ``latency`` (tables 5-6), ``report`` (JSON +
Markdown), ``vision`` (digits and other ee_rl.vision backbones) and ``rl`` (PPO experts with distilled heads).
"""
