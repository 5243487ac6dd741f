"""HTTP API: a pure-ASGI app, routes per protocol, error mapping."""
