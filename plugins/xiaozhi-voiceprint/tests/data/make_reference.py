"""Regenerate the test data of xiaozhi-voiceprint (NOT run by the tests).

What it writes, next to this file:

* ``*.wav``: short 16 kHz mono 16-bit utterances spoken by eSpeak NG voices
  (``wavs`` step; needs the ``espeak-ng`` and ``sox`` programs);
* ``reference_embeddings.json``: embeddings computed by the ORIGINAL Resemblyzer
  (torch + librosa + webrtcvad) for some of those files (``reference`` step);
* ``tiny_zip_format.pt`` and ``tiny_legacy_format.pt``: two tiny checkpoints written by
  ``torch.save`` in its two file formats, to test the torch-free loader (``reference``
  step). They hold a few made-up numbers, not model weights.

The ``reference`` step needs torch, which this project never installs: run it in a
separate, throw-away virtual environment outside the repository, e.g.::

    python3.11 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 librosa webrtcvad-wheels numpy scipy
    /tmp/refvenv/bin/pip install --no-deps resemblyzer==0.1.4
    /tmp/refvenv/bin/python plugins/xiaozhi-voiceprint/tests/data/make_reference.py reference

(``webrtcvad-wheels`` provides the ``webrtcvad`` module as a prebuilt wheel.) The
``wavs`` step runs with any Python: ``python3 make_reference.py wavs``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

SENTENCES = {
    1: "The quick brown fox jumps over the lazy dog near the river bank.",
    2: "Please turn on the kitchen lights and set a timer for ten minutes.",
    3: "What will the weather be like tomorrow morning in the city?",
}
#: file name -> (espeak-ng voice, sentence number)
WAVS = {
    "en-us_1.wav": ("en-us", 1),  # speaker A, enrolment
    "en-us_2.wav": ("en-us", 3),  # speaker A, probe
    "en+f3_1.wav": ("en+f3", 1),  # speaker B, enrolment
    "en+f3_2.wav": ("en+f3", 3),  # speaker B, probe
    "en-us+klatt_1.wav": ("en-us+klatt", 2),  # never enrolled
}
#: Files the reference embeddings are computed for (three different voices).
REFERENCE_WAVS = ["en-us_1.wav", "en+f3_1.wav", "en-us+klatt_1.wav"]
#: The "padded" variant: silence (in samples) before, inside (at the middle) and after.
PADDING = {"lead": 8000, "middle": 24000, "tail": 16000}


def make_wavs() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        for name, (voice, sentence) in WAVS.items():
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), SENTENCES[sentence]],
                           check=True)
            # 3 dB of headroom (resampling overshoots), no dither: reproducible output.
            subprocess.run(["sox", "-D", str(raw), "-b", "16", "-c", "1", str(HERE / name),
                            "gain", "-3", "rate", "16000"], check=True)
            print(name, (HERE / name).stat().st_size, "bytes")


def padded(wav):  # type: ignore[no-untyped-def]
    import numpy as np

    half = len(wav) // 2
    return np.concatenate([
        np.zeros(PADDING["lead"], wav.dtype), wav[:half], np.zeros(PADDING["middle"], wav.dtype),
        wav[half:], np.zeros(PADDING["tail"], wav.dtype),
    ])


def make_reference() -> None:
    import importlib.metadata as md

    import librosa
    import numpy as np
    import torch
    from resemblyzer import VoiceEncoder, normalize_volume, preprocess_wav

    encoder = VoiceEncoder("cpu", verbose=False)

    def vec(e: np.ndarray) -> list[float]:
        return [float(f"{float(v):.7g}") for v in e]

    cases = []
    for name in REFERENCE_WAVS:
        # librosa.load scales int16 by 1/32768, as the provider does.
        wav, sr = librosa.load(str(HERE / name), sr=None)
        assert sr == 16000, (name, sr)
        # "network": the encoder on volume-normalised audio, no silence trimming. The
        # numpy implementation must reproduce this exactly.
        network = encoder.embed_utterance(normalize_volume(wav, -30, increase_only=True))
        # "pipeline": Resemblyzer's full preprocessing (includes webrtcvad trimming).
        pipeline = encoder.embed_utterance(preprocess_wav(wav))
        pipeline_padded = encoder.embed_utterance(preprocess_wav(padded(wav)))
        cases += [
            {"wav": name, "variant": "network", "embedding": vec(network)},
            {"wav": name, "variant": "pipeline", "embedding": vec(pipeline)},
            {"wav": name, "variant": "pipeline_padded", "embedding": vec(pipeline_padded)},
        ]
    out = {
        "generator": "tests/data/make_reference.py reference (original Resemblyzer, torch)",
        "variants": {
            "network": "VoiceEncoder.embed_utterance(normalize_volume(wav, -30, "
                       "increase_only=True)): no silence trimming",
            "pipeline": "VoiceEncoder.embed_utterance(preprocess_wav(wav)): with webrtcvad "
                        "trimming",
            "pipeline_padded": "as pipeline, on the wav with silence added (see padding)",
        },
        "padding": PADDING,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "librosa": librosa.__version__,
            "numpy": np.__version__,
            "resemblyzer": md.version("resemblyzer"),
            "webrtcvad-wheels": md.version("webrtcvad-wheels"),
        },
        "cases": cases,
    }
    path = HERE / "reference_embeddings.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(path, path.stat().st_size, "bytes")

    # Tiny checkpoints in both torch.save formats, for the loader's tests.
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tiny = {
        "matrix": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "base": base,
        "transposed": base.t(),  # a non-contiguous view sharing base's storage
        "rows": base[1:],  # a view with a storage offset
        "ints": torch.tensor([1, -2, 3], dtype=torch.int64),
        "half": torch.tensor([0.5, -1.25], dtype=torch.float16),
        "nested": [torch.ones(2, dtype=torch.float64), {"step": 3}],
    }
    torch.save(tiny, HERE / "tiny_zip_format.pt")
    torch.save(tiny, HERE / "tiny_legacy_format.pt", _use_new_zipfile_serialization=False)
    for p in ("tiny_zip_format.pt", "tiny_legacy_format.pt"):
        print(p, (HERE / p).stat().st_size, "bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["wavs", "reference"])
    args = parser.parse_args()
    make_wavs() if args.step == "wavs" else make_reference()


if __name__ == "__main__":
    main()
