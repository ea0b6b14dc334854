"""Every figure: attention heatmaps, Q/K/V and training curves, the paper-component figures."""
