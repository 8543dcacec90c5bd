"""Binary fingerprints: packing, Hamming similarity, and their storage in a catalogue and a faiss binary
index (the recogniser on a binary model is tested with the SAMAF family in tests/test_families.py)."""

import faiss
import numpy as np
import pytest
import torch

from fplib import codes, index
from fplib.catalogue import Catalogue
from fplib.errors import BadFileError
from fplib.features import FrontEnd

FE = FrontEnd()


def test_encode_packs_the_signs_most_significant_bit_first():
    z = np.zeros((2, 16), np.float32) - 0.5
    z[0, 0] = z[0, 9] = 0.3  # bits 0 and 9 on
    z[1, 7] = 1.0
    packed = codes.encode(torch.from_numpy(z), "binary")
    assert packed.dtype == np.uint8 and packed.shape == (2, 2)
    assert packed.tolist() == [[0b10000000, 0b01000000], [0b00000001, 0]]
    assert (np.unpackbits(packed, axis=1) == (z > 0)).all()
    assert codes.dim(packed, "binary") == 16 and codes.bytes_per_fingerprint(16, "binary") == 2
    floats = codes.encode(z, "float")
    assert floats.dtype == np.float32 and (floats == z).all() and codes.bytes_per_fingerprint(128, "float") == 512
    with pytest.raises(ValueError, match="multiple of 8"):
        codes.encode(np.ones((1, 12)), "binary")
    with pytest.raises(ValueError, match="kind"):
        codes.encode(z, "ternary")


def test_hamming_similarity_against_a_direct_computation():
    rng = np.random.default_rng(0)
    bits_a, bits_b = rng.integers(0, 2, (7, 128)), rng.integers(0, 2, (5, 128))
    a, b = np.packbits(bits_a, axis=1), np.packbits(bits_b, axis=1)
    direct = np.array([[sum(x != y for x, y in zip(ra, rb)) for rb in bits_b] for ra in bits_a])
    assert (codes.hamming(a[:, None], b[None]) == direct).all()
    np.testing.assert_allclose(codes.similarity_matrix(a, b, "binary"), 1 - 2 * direct / 128)
    np.testing.assert_allclose(codes.similarity(a[:5], b, "binary"), 1 - 2 * np.diag(direct[:5]) / 128)
    assert codes.similarity(a[:1], a[:1], "binary")[0] == 1.0
    assert codes.similarity(a[:1], np.bitwise_not(a[:1]), "binary")[0] == -1.0
    # the +-1 inner product / D, as the trainer's validation computes it from relaxed codes
    za, zb = torch.from_numpy(bits_a * 2.0 - 1) * 0.3, torch.from_numpy(bits_b * 2.0 - 1) * 0.7
    np.testing.assert_allclose(
        codes.torch_similarity_matrix(za.float(), zb.float(), "binary").numpy(), 1 - 2 * direct / 128, rtol=1e-6
    )
    # the faiss binary index computes the same distances
    flat = faiss.IndexBinaryFlat(128)
    flat.add(b)
    dist, ids = flat.search(a, 5)
    assert (dist == np.take_along_axis(direct, ids, 1)).all()


def _binary_catalogue(folder, n_songs=3, n=60, bits=128, seed=0):
    rng = np.random.default_rng(seed)
    cat = Catalogue(folder, FE, {"sha256": f"binary-{seed}", "kind": "binary", "name": "samaf_small"})
    songs = []
    for i in range(n_songs):
        v = np.packbits(rng.integers(0, 2, (n, bits)), axis=1)
        songs.append(cat.add(f"song{i}.wav", v, n * FE.hop_s, f"checksum-{seed}-{i}", f"song{i}"))
    return cat, songs


@pytest.mark.parametrize("factory", [None, "BFlat"])
def test_a_binary_catalogue_gets_a_faiss_binary_index(tmp_path, factory):
    cat, songs = _binary_catalogue(tmp_path / "cat", n_songs=3, n=60)
    assert cat.kind == "binary"
    v = cat.vectors(songs[1])
    assert v.dtype == np.uint8 and v.shape == (60, 16)  # packed, not cast to float
    path = index.build(cat, "fp", tmp_path / "idx", d=128, factory=factory, nprobe=4)
    meta = index.read_meta(path)
    assert meta["metric"] == "hamming" and meta["bytes_per_vector"] == 16 + 8
    loaded = index.load(path, cat)
    assert isinstance(loaded, faiss.IndexBinary) and loaded.ntotal == 180 and loaded.code_size == 16
    if factory is None:
        assert isinstance(loaded, faiss.IndexBinaryIVF) and meta["factory"] == "BIVF4"  # 180 // 39 lists
    # every stored code finds itself (distance 0) at its own global id
    dist, ids = loaded.search(v, 1)
    assert (dist[:, 0] == 0).all() and (ids[:, 0] == songs[1].first_vector + np.arange(60)).all()
    # the index file really is a binary index: a 16-byte code and an 8-byte id per vector, not floats
    empty = index.new_binary_index(meta["factory"], 128)
    assert path.stat().st_size < 180 * (16 + 8) + 128 * 16 * 8 + 4096
    del empty
    cat.close()


def test_binary_and_float_are_never_mixed(tmp_path):
    cat, songs = _binary_catalogue(tmp_path / "cat")
    with pytest.raises(ValueError, match="uint8"):
        cat.add("x.wav", np.ones((4, 128), np.float32), 2.0, "float-checksum")
    with pytest.raises(ValueError, match="float vectors"):
        index.build(cat, "fp", tmp_path / "idx", factory="IVF4,PQ8")
    with pytest.raises(ValueError, match="128-bit, not 256"):
        index.build(cat, "fp", tmp_path / "idx", d=256)
    path = index.build(cat, "fp", tmp_path / "idx")
    other = Catalogue(tmp_path / "floats", FE, {"sha256": "binary-0"})  # same model record, float kind
    other.add("y.wav", np.ones((4, 128), np.float32) / np.sqrt(128), 2.0, "c")
    with pytest.raises(BadFileError, match="binary index"):
        index.load(path, other)
    cat.close()
    other.close()


def test_add_and_remove_songs_in_a_binary_index(tmp_path):
    cat, songs = _binary_catalogue(tmp_path / "cat", n_songs=2)
    path = index.build(cat, "fp", tmp_path / "idx", factory="BFlat")
    more = np.packbits(np.random.default_rng(5).integers(0, 2, (20, 128)), axis=1)
    new = cat.add("new.wav", more, 10.0, "checksum-new", "new")
    assert index.add_songs(path, cat, [new]).ntotal == 140
    assert index.load(path, cat).ntotal == 140
    assert index.remove_songs(path, cat, [songs[0].id]).ntotal == 80
    loaded = index.load(path, cat)
    dist, ids = loaded.search(more[:3], 1)
    assert (ids[:, 0] == new.first_vector + np.arange(3)).all() and (dist == 0).all()
    cat.close()
