"""Engines: where a batch runs. Nothing outside this package knows which one is in use."""
