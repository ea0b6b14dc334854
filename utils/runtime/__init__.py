"""Infrastructure: settings and their checks, one-line errors, checkpoint files, atomic writes,
graceful stops, torchrun, metrics logs and Weights & Biases."""
