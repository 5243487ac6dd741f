"""End-to-end tests: the official clients (Triton, OpenAI) against a real server."""
