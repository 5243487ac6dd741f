"""Check exported ONNX graphs against the PyTorch model they came from (build time only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from inferline.config import PACK_WIDTH
from inferline.engines.onnx import pad_batch
from inferline.engines.packing import pack_batch
from inferline.errors import ModelBuildError
from inferline.modelrepo.torchmodel import Encoder
from inferline.tokenizer import TextEncoder

# Amazon review sentences from the VADER ground-truth data (Hutto & Gilbert, 2014; MIT
# licence), the domain the service is built for, plus one text over the token limit.
SENTENCES = [
    "nothing is perfect).",
    "great gadget i bought this last week through amazon.",
    "3. the remote capture and fileviewer software bundled for photo capture is mind-blowing.",
    "unless your a professional, now you will need only one camera.",
    "you can use this camera right out of the box on the automatic setting, or slowly get comfortable with the manual settings and what they can do.",
    "some movies it played yesterday, it won't play today.",
    "it is easy enough to use for a beginner like me but it has plenty of features for me to grow into.",
    "excellent little camera i did quite a bit of research before buying this camera, and this one had everything i was looking for.",
    "the volume level of the phone is not all that good.",
    "after having had my heart broken by a sexy piece of hardware that simply wouldn't perform.",
    "the first night i got this phone i put it next to me when i went to bed just to listen to my favorite music station and the handset itself doesnt weight anything its too light and feel so comfy with it.",
    "i couldn't be happier with t-mobile either, i switched from cingular.",
    "now, for the t-mobile service:  i cannot say enough good things about the people who answer the phones.",
    "my two main requirements were longer battery life and lower price: i found both.",
    "fantastic piece of machinery.",
    "ripping &amp; transferring tunes is basic, and pretty fast (even on a 1.1 usb).",
    "i had no problems setting up the software and getting my favorite cd's transferred.",
    "it was not my first choice.",
    "i ignored the instruction booklet (as i do with any product) and figured out how to organize separate playlists within minutes.",
    "buy this instead of an ipod.",
    "perhaps the weirdest was one of bruce springsteen's cds from the tracks set being classified as goth rock.",
    "so if you have xp, be prepared for this and don't be alarmed.",
    "it was easy enough to remove the front plate, and there was only one way the battery could be inserted.",
    "i would have given a 3 to 5 star review in my first few weeks, depending on how mad i felt about the crummy software.",
    "construction quality is a difficult item.",
    "it sure does!",
    "ok so i donno about what other people said, how the player breaks and stuff, and the headfone jack, fortunately that did not happen to me.",
    "i bought this dvd player mainly because my old sharp dvd player could not play most of the dvds from the store that i rent from and i had to watch them using my pc's dvd-rom player.",
    "i've registered this unit at www.apexdigialinc.com and listed the problem.",
    "i'm editing my review, because now i wish i read the manual before returning the player i bought for my girlfriend.",
    'somewhat disappointed that i could not " hook up " to my sony multi brand remote commander.',
    "value for money.",
    " ".join(["The manual is long and repetitive, and the pictures do not match the parts."] * 20),
]

FloatArray = npt.NDArray[np.float32]


def reference(model: Encoder, encoder: TextEncoder) -> FloatArray:
    ids, mask = pad_batch(encoder.encode(SENTENCES))
    with torch.no_grad():
        out: FloatArray = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    return out


def run_onnx(
    path: Path, encoder: TextEncoder, batch: int = 8, *, packed: bool = False
) -> FloatArray:
    """Run as the server does: length-sorted batches, padded or packed into rows
    (engines/packing.py). Dynamic int8 scales activations per batch, so one long text padded
    next to short ones would lower their fidelity."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    plain, packed_output = (o.name for o in session.get_outputs())
    items = encoder.encode(SENTENCES)
    order = sorted(range(len(items)), key=lambda i: items[i].tokens)
    rows: dict[int, FloatArray] = {}
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        if packed:
            ids, segments, row, slot = pack_batch([items[i] for i in idx], PACK_WIDTH)
            feeds = {"input_ids": ids, "attention_mask": segments}
            out = session.run([packed_output], feeds)[0][row, slot]
        else:
            ids, mask = pad_batch([items[i] for i in idx])
            out = session.run([plain], {"input_ids": ids, "attention_mask": mask})[0]
        rows.update(zip(idx, out, strict=True))
    return np.stack([rows[i] for i in range(len(items))])


def cosines(a: FloatArray, b: FloatArray) -> FloatArray:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    result: FloatArray = num / np.maximum(den, 1e-12)
    return result


def check_embeddings(name: str, ref: FloatArray, got: FloatArray, *, quantized: bool) -> str:
    cos = cosines(ref, got)
    mean, low = float(cos.mean()), float(cos.min())
    if quantized:
        ok = mean >= 0.99 and low >= 0.95
        rule = "mean >= 0.99 and min >= 0.95"
    else:
        ok = low >= 0.9999
        rule = "min >= 0.9999"
    summary = f"{name}: cosine to PyTorch mean {mean:.5f}, min {low:.5f} (needs {rule})"
    if not ok:
        raise ModelBuildError(f"verification failed: {summary}")
    return summary


def check_probabilities(name: str, ref: FloatArray, got: FloatArray, *, quantized: bool) -> str:
    """fp32 must match PyTorch closely. int8 moves texts near a class boundary, so it is held
    to the mean difference and the label agreement (its accuracy is checked by model eval)."""
    diff = np.abs(ref - got)
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    if quantized:
        ok = float(diff.mean()) <= 0.05 and agree >= 0.9
        rule = "mean difference <= 0.05, labels agree >= 90%"
    else:
        ok = float(diff.max()) <= 1e-3
        rule = "largest difference <= 0.001"
    summary = (
        f"{name}: probability difference mean {diff.mean():.4f}, largest {diff.max():.4f}, "
        f"labels agree {agree:.0%} (needs {rule})"
    )
    if not ok:
        raise ModelBuildError(f"verification failed: {summary}")
    return summary
