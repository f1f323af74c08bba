"""ai2text HTTP gateway: the JWT-guarded API, the S3 webhook and the OpenAI-compatible endpoint."""
