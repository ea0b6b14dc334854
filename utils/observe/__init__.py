"""Watching the model: capture points and the activation cache, the --debug trace printer, the
analysis of attention, Q/K/V and gradients, and the --track_internals recorder. Everything here
reads the cache contract (docs/ARCHITECTURE.md), never a version's internals; family.py says how
to read an encoder-decoder's cache, a decoder-only model's (GPT) and an encoder-only model's (BERT,
ViT)."""
