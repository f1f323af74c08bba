"""ai2text workers: the ASR worker (engines below a long-audio layer) and the trainers."""
