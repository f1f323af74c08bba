"""Telling the outside world what happened: webhooks and transcript files, from the outbox."""
