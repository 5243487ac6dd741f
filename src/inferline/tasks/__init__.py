"""Task heads: turn engine output rows into client-facing results."""
