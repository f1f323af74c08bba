"""ai2text HTTP gateway (JWT-guarded query API); filled in by the gateway issue."""
