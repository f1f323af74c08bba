"""The reference trainer: proof that a frozen dataset version trains end to end.

It is a small, honest starting point, not a production recipe. It reads audio
only through the NeMo manifests that ``ai2text dataset freeze`` writes (local
files; run ``ai2text dataset freeze --materialize DIR`` to get them), computes
80-band log-mel features with plain torch, and fits a tiny CTC model over
characters for a fixed number of AdamW steps. On success ``--out`` holds
``checkpoint.pt`` and ``metrics.json``; on failure neither is left there.

Modules, one role each:

    text       the character vocabulary and text normalisation
    manifest   reading and checking manifests; decoding and slicing their audio
    features   the log-mel front end (STFT + a mel filterbank built here)
    model      the CTC acoustic model
    train      the optimisation loop and the dev evaluation
    outputs    writing checkpoint and metrics atomically, removing them on failure
    cli        ``ai2text-train``
"""
