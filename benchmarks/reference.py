"""The reference of the benchmarks: the seed's per-example way of doing things (librosa features and the model
one window at a time, the divide-and-encode head as 128 small modules called in a loop, one song after another;
``benchmarks/README.md`` says what the seed is), kept only to be timed next to fplib."""

from __future__ import annotations

import librosa
import numpy as np
import torch
from torch import nn

from fplib import audio
from fplib.catalogue import Catalogue
from fplib.extraction import fingerprint
from fplib.features import FrontEnd
from fplib.models.nafp import NAFP
from fplib.storage import file_checksum


class LoopHead(nn.Module):
    """Divide and encode as 128 separate 8 -> 32 -> 1 modules, called one by one."""

    def __init__(self, d_in: int = 1024, emb: int = 128, hidden: int = 32):
        super().__init__()
        self.size = d_in // emb
        self.groups = nn.ModuleList(
            nn.Sequential(nn.Linear(self.size, hidden), nn.ELU(), nn.Linear(hidden, 1)) for _ in range(emb)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([g(x[:, i * self.size : (i + 1) * self.size]) for i, g in enumerate(self.groups)], dim=1)


class LoopNAFP(NAFP):
    """NAFP with the looped head; ``copy_from`` takes the encoder weights of a fplib model."""

    def __init__(self, copy_from: NAFP | None = None):
        super().__init__()
        self.head = LoopHead()
        if copy_from is not None:
            self.encoder.load_state_dict(copy_from.encoder.state_dict())


def librosa_logmel(window: np.ndarray, fe: FrontEnd = FrontEnd()) -> np.ndarray:
    """One window's log-mel, the reference's way (librosa, per window)."""
    mel = librosa.feature.melspectrogram(
        y=window,
        sr=fe.sr,
        n_fft=fe.n_fft,
        hop_length=fe.stft_hop,
        n_mels=fe.n_mels,
        fmin=fe.f_min,
        fmax=fe.f_max,
        htk=True,
        norm=None,
        center=True,
        pad_mode="constant",
    )
    return librosa.power_to_db(mel, ref=np.max, top_db=-fe.floor_db).astype(np.float32)


def fingerprint_one_by_one(wav: np.ndarray, model: nn.Module, fe: FrontEnd = FrontEnd()) -> np.ndarray:
    """Features and model one window at a time."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(wav) - fe.win_len + 1, fe.hop_len):
            x = torch.from_numpy(librosa_logmel(wav[start : start + fe.win_len], fe))[None, None]
            out.append(model(x)[0].numpy())
    return np.stack(out)


def extract_sequential(files: list, catalogue: Catalogue, model: nn.Module, batch: int = 256) -> None:
    """Fingerprint songs into a catalogue one at a time in one thread: read and checksum, decode and
    resample, front end, network, write (fplib's extraction before decoding ran beside the network)."""
    fe = catalogue.fe
    for f in files:
        checksum = file_checksum(f)
        if catalogue.find_checksum(checksum):
            continue
        wav = audio.load(f, fe.sr, min_duration=fe.win_s)
        catalogue.add(f, fingerprint(wav, model, fe, batch), len(wav) / fe.sr, checksum, f.stem)
