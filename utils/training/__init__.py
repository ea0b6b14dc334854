"""The training recipe of the paper both versions share: Adam, the Noam schedule, label smoothing,
checkpoint averaging, and the metrics (exact match, BLEU, chrF)."""
