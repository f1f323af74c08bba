"""Fine-tuning the Whisper model the workers run (``ai2text-train whisper``).

The workers run CTranslate2 models; training needs torch. A run reads the base
directory's ``model.bin`` (``ct2``), maps its variables into transformers'
``WhisperForConditionalGeneration`` (``mapping``, tokens from ``tokenizer.json``
in ``tokens``), trains on a manifest's utterances (``data``, ``train``), converts
the result back with ctranslate2's own converter (``export``), and scores base
and candidate with the workers' engine (``evaluate``) on dev, test and the canary
set shipped in ``workers/trainer/canary``. ``outputs`` makes ``model/`` and
``metrics.json`` appear only after a run that succeeded; ``run`` ties it together
and ``cli`` is the command line.
"""
