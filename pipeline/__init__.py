"""ai2text core library: configuration, database, queue, storage, ingest and CLI."""

__version__ = "0.1.0"
