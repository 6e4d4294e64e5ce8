"""Multi-Mode Fusion (MMF) training: the IDZoom data engine, Clone Face Tuning, `L_cfa` and the accelerate loop."""
