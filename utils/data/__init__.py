"""Data: the toy tasks and corpora, the tokenizers (characters, BPE), batching and the data report."""
