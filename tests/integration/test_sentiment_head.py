"""The default sentiment model puts obvious sentences in the right class."""

from __future__ import annotations

import httpx

OBVIOUS = {
    "Positive": [
        "I love it, best purchase ever!",
        "Excellent quality and fast shipping, highly recommended.",
        "This blender is fantastic and works perfectly.",
    ],
    "Negative": [
        "Terrible product, it broke after one day.",
        "Awful customer service, I want my money back.",
        "The worst headphones I have ever owned.",
    ],
    "Neutral": [
        "The package contains one cable.",
        "It weighs two pounds.",
    ],
}


def test_obvious_sentences(client: httpx.Client) -> None:
    texts = [t for group in OBVIOUS.values() for t in group]
    results = client.post("/predict", json={"texts": texts}).json()["results"]
    got = [r["label"] for r in results]
    want = [label for label, group in OBVIOUS.items() for _ in group]
    assert got == want
