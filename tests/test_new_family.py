"""A fourth fingerprinter family is one new module plus its registry entry: a tiny network defined here,
registered through :mod:`fplib.models.registry` alone, goes through the trainer command (its name is one
of ``--arch``'s choices, its training settings come from its entry), extraction into a catalogue of its
kind, indexing and search, which finds the song a query was cut from. Float vectors and binary codes."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fplib import audio, cli, codes, index
from fplib.catalogue import Catalogue
from fplib.checkpoints import load_checkpoint, load_model, model_description
from fplib.extraction import extract
from fplib.features import FrontEnd
from fplib.losses import nt_xent
from fplib.models.registry import kind_of, kind_of_model, model_names, n_parameters, register, unregister
from fplib.search import Recognizer
from tests.helpers import make_folders

DIM = 32  # floats, or bits (a multiple of 8)


class Tiny(nn.Module):
    """Log-mel windows averaged into a 4 x 4 grid, one linear map: 544 parameters. Unit vectors (float) or
    relaxed codes in [-1, 1] (binary)."""

    def __init__(self, fe: FrontEnd, kind: str, dim: int = DIM):
        super().__init__()
        self.kind_out, self.pool, self.proj = kind, nn.AdaptiveAvgPool2d((4, 4)), nn.Linear(16, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.proj(self.pool(x).flatten(1))
        return F.normalize(z, dim=1) if self.kind_out == "float" else torch.tanh(z)


def _binary_objective(net, model, x_a, x_b, temperature, gather=True):
    """This family's own objective: NT-Xent on the normalised relaxed codes."""
    z_a, z_b = net(torch.cat([x_a, x_b])).float().chunk(2)
    return nt_xent(F.normalize(z_a, dim=1), F.normalize(z_b, dim=1), temperature, gather), z_a, z_b


ENTRIES = {  # the registry entry of each kind (what a new family's module adds to fplib.models.registry.BUILTIN)
    "float": dict(
        kind="float",
        description="a test family: 4 x 4 averages, one linear map",
        training={"lr": 1e-3, "lr_ref_batch": 4, "items_per_song": 2},
    ),
    "binary": dict(
        kind="binary",
        description="a test family of binary codes",
        loss="test codes",
        objective=_binary_objective,
        training={"lr": 1e-3, "lr_ref_batch": 4, "items_per_song": 2, "temperature": 0.1},
    ),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("new_family"), n_songs=4, seconds=6.0)


@pytest.fixture
def family(request, monkeypatch):
    kind = request.param
    name = f"test_new_family_{kind}"
    monkeypatch.setenv("FPLIB_ENGINE", "torch")  # the network runs in torch (no ONNX export for a test network)
    register(name, lambda fe=FrontEnd(), **settings: Tiny(fe, kind, **settings), **ENTRIES[kind])
    yield name
    unregister(name)  # the registry is global: later tests must not see the test family


@pytest.mark.parametrize("family", ["float", "binary"], indirect=True)
def test_new_family_trains_extracts_indexes_and_is_found(family, corpus, tmp_path):
    kind = kind_of(family)
    # training: the trainer command knows the family by its registry entry alone
    assert (
        cli.trainer_main(
            [
                "-ep",
                "1",
                "-bs",
                "4",
                "-m",
                "fp",
                "-o",
                str(tmp_path),
                "--arch",
                family,
                "--preload",
                "--val_items_per_song",
                "2",
                "--no_amp",
                "--device",
                "cpu",
                "dynamic_online",
                "-p",
                str(corpus["songs"]),
                "-ir",
                str(corpus["rir"]),
                "-bn",
                str(corpus["noise"]),
            ]
        )
        == 0
    )
    ck = load_checkpoint(tmp_path / "fp.pt")
    train_cfg = ck["train_config"]
    assert ck["model_name"] == family and np.isfinite(ck["metrics"]["train_loss"])
    assert (train_cfg["lr"], train_cfg["lr_ref_batch"], train_cfg["items_per_song"]) == (1e-3, 4, 2)  # the entry's
    assert train_cfg["temperature"] == ENTRIES[kind]["training"].get("temperature", 0.05)
    model, fe = load_model(tmp_path / "fp.pt")
    assert kind_of_model(model) == kind and n_parameters(model) == 16 * DIM + DIM

    # extraction into a catalogue of the family's kind, then the index
    songs = audio.list_audio(corpus["songs"])
    with Catalogue(tmp_path / "cat", fe, model_description(tmp_path / "fp.pt", model)) as cat:
        result = extract(songs, cat, model, progress=False)
        assert len(result.added) == len(songs) and cat.kind == kind
        v = cat.vectors(cat.songs()[0])
        assert v.dtype == codes.stored_dtype(kind) and codes.dim(v, kind) == DIM
        path = index.build(cat, "fp", tmp_path / "idx", d=DIM, factory="BFlat" if kind == "binary" else "Flat")
        assert index.read_meta(path)["metric"] == ("hamming" if kind == "binary" else "inner_product")

        # search: 3 s cut from a catalogue song, on the catalogue's window grid, is found there (every window is a
        # candidate: a barely trained 32-bit code has many ties)
        song = cat.songs()[2]
        wav = audio.load(song.path, sr=fe.sr)
        rec = Recognizer(model, cat, path, k=sum(s.n_vectors for s in cat.songs()))  # every window: ties
        r = rec.recognize(wav[2 * fe.sr : 5 * fe.sr].copy())
        assert r.best is not None and r.best.name == song.name and r.best.offset_s == pytest.approx(2.0)


def test_new_family_is_gone_after_the_test():
    assert not [n for n in model_names() if n.startswith("test_new_family")]
    assert json.dumps(sorted(model_names()))  # the built-in families are still there
