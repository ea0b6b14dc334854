"""What main.py runs once it has parsed the flags into a RunConfig, one module per command.

    train.py        --version pytorch | huggingface | both | analysis | test, and each run's
                    one-line summary
    decode.py       --checkpoint PATH with --source TEXT or --interactive (stdin), UTF-8 checks
    evaluate.py     --evaluate --checkpoint PATH --test_prefix PREFIX: BLEU and chrF on a test set
    checkpoints.py  checkpoint_kind: a .pt file (pytorch_version) or a save_pretrained folder
                    (huggingface_version), and loading either for decoding

Imports go one way: main.py -> commands -> pytorch_version / huggingface_version -> utils. The
versions are imported inside the functions, so a pytorch_version command never waits for
transformers' import (seconds).
"""
