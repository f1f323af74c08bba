"""ai2text workers: the ASR worker and (later) training launchers."""
