"""Texts and names the end-to-end tests share."""

REVIEWS = [
    "I absolutely love this camera, the pictures are stunning.",
    "This is the worst purchase I have ever made.",
    "It arrived on Tuesday in a cardboard box.",
]
NON_ASCII = [
    "Très bon produit, je le recommande à tous ! 👍",
    "日本語のレビューです。とても良い商品でした",
    "Naïve design — broke after ½ a day. Ужасно.",
]
SENTIMENT_OUTPUTS = ["label", "score", "probabilities"]
