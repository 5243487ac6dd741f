"""Model repository: build (export, quantise, verify), manifest, training data."""
