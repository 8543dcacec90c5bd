"""The README's "Identify your own music" commands, exactly as written there, on generated audio with
the shipped model: a folder of songs in several formats and rates, and a phone-like recording (an
excerpt of one song, reverberated, noisy, saved as .m4a) that must be named with its offset."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soxr
import torch

from fplib import audio, pretrained, storage
from fplib.augment import add_noise, convolve_ir
from fplib.synth.music import synth_song
from fplib.synth.noise import synth_noise
from fplib.synth.rooms import RIR_SR, simulate_rir

SONG_S = 40.0
MEMO_SONG, MEMO_START_S, MEMO_S = 3, 12.0, 8.0


def readme_commands() -> list[str]:
    """The command lines of the first bash block of the README's "Identify your own music" section."""
    text = (storage.project_root() / "README.md").read_text()
    section = text.split("\n## Identify your own music\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split(" #")[0].strip() for line in block.splitlines() if line.split(" #")[0].strip()]


def _degrade(wav: np.ndarray, seed: int, snr_db: float) -> np.ndarray:
    ir, _ = simulate_rir(seed, RIR_SR)
    noise = synth_noise("babble", seed, len(wav) / audio.SR + 1.0, audio.SR)[: len(wav)]
    ir8 = soxr.resample(ir, RIR_SR, audio.SR)
    x = convolve_ir(torch.from_numpy(wav)[None], torch.from_numpy(ir8.astype(np.float32))[None])
    x = add_noise(x, torch.from_numpy(noise.astype(np.float32))[None], torch.tensor([snr_db]))
    return (0.9 * x / x.abs().max())[0].numpy()


@pytest.mark.slow
def test_readme_own_music_commands_name_the_song_and_offset(tmp_path):
    commands = readme_commands()
    assert [c.split()[0] for c in commands] == [
        "generate_fingerprints",
        "create_faiss_indexes",
        "calibrate_threshold",
        "recognize",
    ]
    music = tmp_path / "Music"
    formats = [("flac", 8000), ("ogg", 22050), ("mp3", 44100), ("wav", 44100), ("m4a", 44100), ("flac", 16000)]
    for i, (ext, sr) in enumerate(formats):  # 40-s songs nobody trained on (seeds 300+)
        wav, _ = synth_song(300 + i, SONG_S, sr)
        if i == 3:  # one stereo file
            wav = np.stack([wav, 0.8 * wav], axis=1)
        audio.write(music / ("album" if i % 2 else "") / f"song_{i}.{ext}", wav, sr)
    song = audio.load(next(music.rglob(f"song_{MEMO_SONG}.*")), audio.SR)
    memo = song[int(MEMO_START_S * audio.SR) : int((MEMO_START_S + MEMO_S) * audio.SR)]
    audio.write(tmp_path / "memo.m4a", _degrade(memo, seed=7, snr_db=10.0), audio.SR)

    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the venv's console scripts
    env = {**os.environ, "HOME": str(tmp_path), "PATH": path}
    outputs = []
    for cmd in commands:
        p = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, f"{cmd}\n{p.stdout}\n{p.stderr}"
        outputs.append(p.stdout)
    assert pretrained.default_model().exists()  # the commands used the shipped model (no --model given)
    answer = outputs[-1]
    m = re.search(r"memo\.m4a \[[^\]]*\]: (\S+) at ([0-9.]+) s", answer)
    assert m, answer
    assert m.group(1).endswith(f"song_{MEMO_SONG}"), answer
    assert abs(float(m.group(2)) - MEMO_START_S) <= 0.5, answer

    # a recording of a song that is not in the catalogue is refused with the calibrated threshold
    other, _ = synth_song(999, 20.0, audio.SR)
    audio.write(tmp_path / "other.m4a", _degrade(other[4 * audio.SR : 12 * audio.SR], seed=8, snr_db=10.0), audio.SR)
    cmd = commands[-1].replace("memo.m4a", "other.m4a")
    p = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "not in the database" in p.stdout, p.stdout + p.stderr
