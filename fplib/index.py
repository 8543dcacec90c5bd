"""The faiss index over a catalogue's fingerprints (the seed's ``create_faiss_indexes.py``, README "The seed").

``build(catalogue, name, out_dir)`` writes ``<name>.index`` (faiss), ``<name>.json`` (the seed's mapping
``{first vector id of a song: song name}``) and ``<name>.meta.json`` (factory string, metric, nprobe,
the catalogue state it was built from). Fixed from the seed's script: the metric is inner product throughout
(fingerprints are unit vectors, so it is their cosine similarity); training uses a bounded random
sample; faiss's polysemous training (85 % of IVF-PQ training time, unused here) is off; nprobe is
really set and read back; files are written atomically; an index that does not match its catalogue
is refused: its metadata records the catalogue state and the model that made the vectors (checkpoint
SHA-256), and every file of the set is checked when loaded (:class:`~fplib.errors.BadFileError` names
the file and what is wrong: missing, truncated, corrupt, of another catalogue or model). Songs can be
added and removed without rebuilding (``add_songs`` / ``remove_songs``).

What the index holds is checked on loading, so that a damaged or replaced index does not answer with
confidence: its file against the size and SHA-256 recorded in its metadata when it was written
(:func:`check_index_file`: flipped bytes in a PQ codebook change answers without making the file
unreadable), and a sampled re-score (:func:`rescore`): :data:`RESCORE_SAMPLES` of the catalogue's own
windows, drawn at random, are searched in it, and most must find themselves. ``fplib db verify``
(:func:`fplib.db.verify`) does both in depth.

Binary fingerprints (models of ``binary`` kind, :mod:`fplib.codes`) go into faiss binary indexes from the same
``build``: ``IndexBinaryIVF`` (factory ``BIVF<nlist>``, the default) or ``IndexBinaryFlat`` (``BFlat``, exact
Hamming search), each code ``D / 8`` bytes plus its 8-byte id; their metadata says ``"metric": "hamming"``.

Beyond one machine, faiss's own tools apply: ``faiss.IndexShards`` to search shards in parallel,
and ``merge`` (IVF ``merge_from``) to combine indexes built separately with the same trained quantiser.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import faiss
import numpy as np

from fplib import codes, storage
from fplib.catalogue import Catalogue, Song
from fplib.checkpoints import same_model
from fplib.errors import BadFileError, check_file, json_type, read_json

# faiss warns below this many training points per centroid; fewer vectors than this per list
# means the catalogue is too small for the requested nlist, which is then reduced.
MIN_POINTS_PER_CENTROID = 39
# The PQ codebooks always have 256 entries (8-bit codes), so faiss's default would ask for 39 x 256 =
# 9,984 training vectors (about 80 minutes of music) and warn, once per sub-quantiser, below that.
# A smaller catalogue still trains them (k-means needs one vector per entry; fewer than 256 vectors
# fall back to Flat, see _fit_factory); the codes are then coarser, which the evaluation measures.
PQ_MIN_POINTS_PER_CENTROID = 1
# An HNSW coarse quantiser (``IVF<nlist>_HNSW32,...``) searches with efSearch = this x nprobe: with faiss's
# default of 16, nprobe 32 found fewer of the exact neighbours than a flat quantiser (bench_search.py).
HNSW_EF_PER_PROBE = 2
# Loading an index checks the SHA-256 of its whole file up to this size: about 0.08 s per 100 MB here (faiss
# takes 0.03-0.08 s to read the same 100 MB), so 1 s for the largest index of a 5e7-window catalogue. A larger
# file is checked by a sampled SHA-256 (its first SAMPLE_HEAD bytes, where the trained coarse quantiser and
# the PQ codebooks lie, its last SAMPLE_BLOCK and SAMPLE_BLOCKS blocks of SAMPLE_BLOCK spread between: about
# 80 MiB); ``fplib db verify`` always reads the whole file.
FULL_CHECK_BYTES = 1 << 30
SAMPLE_HEAD = 16 << 20
SAMPLE_BLOCK = 1 << 20
SAMPLE_BLOCKS = 64
# The sampled re-score on loading: this many windows of the catalogue, drawn at random, searched in the index
# (as built: its saved nprobe) for their RESCORE_K nearest. A window is found if its own id is among them, or
# the first one is a window nearly identical to it (similarity >= RESCORE_NEAR: the same music twice, silence).
# An undamaged index finds nearly all (measured: IVF-PQ, fast-scan PQ and Flat 100 % of 472 real fingerprints;
# IVF1024,PQ32x4fs and IVF256,PQ32 100 %, IVF1024,PQ16 98.8 % of 512 drawn from 200,000 clustered vectors);
# the index is refused if it finds fewer than half. 400 changed bytes in a PQ codebook left 0-4 % found; an
# index of other fingerprints finds almost none. The 32 searches cost what 32 query windows cost a
# recogniser (milliseconds); ``fplib db verify`` draws VERIFY_SAMPLES.
RESCORE_SAMPLES = 32
VERIFY_SAMPLES = 256
RESCORE_K = 10
RESCORE_NEAR = 0.9


# Large catalogues (measured by benchmarks/bench_search.py, README "Choosing an index for a large catalogue"):
# noisy query windows need about 1/16 of the lists probed for the exact first neighbour to be among the 20
# candidates 95 % of the time, whatever the size, so the cost per query grows with the catalogue; 4-bit
# fast-scan PQ scans those codes 20x faster than 8-bit PQ at the same recall after re-ranking, and 4,096
# lists with a flat quantiser beat 16,384 behind an HNSW one. The default stays the seed's.
# (fewest windows, factory, nprobe), largest first:
LARGE_CATALOGUES = ((5_000_000, "IVF4096,PQ32x4fs", 256), (1_000_000, "IVF1024,PQ32x4fs", 64))


def large_catalogue_choice(n_windows: int) -> tuple[str, int] | None:
    """The measured factory string and nprobe for a float catalogue of ``n_windows`` (None below a million)."""
    return next(((f, p) for least, f, p in LARGE_CATALOGUES if n_windows >= least), None)


def factory_string(m: int = 32, nlist: int = 256) -> str:
    """The seed's IVF-PQ: ``nlist`` inverted lists, ``m`` sub-quantisers of 8 bits."""
    return f"IVF{nlist},PQ{m}"


def binary_factory_string(nlist: int = 256) -> str:
    """The default binary index: ``nlist`` inverted lists of packed codes (faiss ``IndexBinaryIVF``)."""
    return f"BIVF{nlist}"


def _fit_factory(factory: str, n: int) -> tuple[str, list[str]]:
    """Shrink IVF lists / PQ codebooks that ``n`` vectors cannot train; returns the string and notes."""
    notes = []
    parts = factory.split(",")
    for i, p in enumerate(parts):
        ivf = "BIVF" if p.startswith("BIVF") else "IVF"
        if p.startswith(ivf) and p[len(ivf) :].isdigit():
            nlist = int(p[len(ivf) :])
            fit = max(1, min(nlist, n // MIN_POINTS_PER_CENTROID))
            if fit < nlist:
                parts[i] = f"{ivf}{fit}"
                notes.append(f"nlist {nlist} -> {fit}: {n} vectors train at most {fit} lists")
        if p.startswith("PQ") and n < 256:
            parts[i] = "Flat"
            notes.append(f"{p} -> Flat: {n} vectors cannot train 256-entry PQ codebooks")
    return ",".join(parts), notes


def is_binary(index) -> bool:
    return isinstance(index, faiss.IndexBinary)


def _ivf(index):
    """The IVF part of an index (float or binary), or None."""
    if is_binary(index):
        inner = faiss.downcast_IndexBinary(index.index if isinstance(index, faiss.IndexBinaryIDMap2) else index)
        return inner if isinstance(inner, faiss.IndexBinaryIVF) else None
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    """Set (and verify) how many inverted lists a search visits (at most all of them); a no-op for
    non-IVF indexes."""
    ivf = _ivf(index)
    if ivf is None:
        return
    want = max(1, min(int(nprobe), ivf.nlist))  # more probes than lists is the same as all lists
    ivf.nprobe = want
    if ivf.nprobe != want:
        raise RuntimeError(f"nprobe was not set (asked {want}, index has {ivf.nprobe})")
    quantizer = faiss.downcast_index(ivf.quantizer) if not is_binary(index) else None
    if isinstance(quantizer, faiss.IndexHNSW):  # an HNSW coarse quantiser must look further than the lists it returns
        quantizer.hnsw.efSearch = max(HNSW_EF_PER_PROBE * want, 16)


def get_nprobe(index: faiss.Index) -> int | None:
    ivf = _ivf(index)
    return None if ivf is None else int(ivf.nprobe)


def new_index(factory: str, d: int) -> faiss.Index:
    """An empty inner-product index for ``factory``; adds an id map where the index has no ids."""
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        if isinstance(ivf, faiss.IndexIVFPQ):
            ivf.do_polysemous_training = False
            ivf.pq.cp.min_points_per_centroid = PQ_MIN_POINTS_PER_CENTROID
    except RuntimeError:
        flat_or_pq = faiss.downcast_index(index)
        if isinstance(flat_or_pq, faiss.IndexPQ):
            flat_or_pq.pq.cp.min_points_per_centroid = PQ_MIN_POINTS_PER_CENTROID
        index = faiss.IndexIDMap2(index)
    return index


def new_binary_index(factory: str, d: int) -> faiss.IndexBinary:
    """An empty binary (Hamming) index of ``d``-bit codes for ``factory`` (``BIVF<nlist>``, ``BFlat``, ...);
    adds an id map where the index has no ids."""
    if d % 8:
        raise ValueError(f"binary codes need a multiple of 8 bits, got {d}")
    index = faiss.index_binary_factory(d, factory)
    return index if isinstance(index, faiss.IndexBinaryIVF) else faiss.IndexBinaryIDMap2(index)


def train_index(index: faiss.Index, vectors: np.ndarray, max_train: int, seed: int = 0) -> None:
    if index.is_trained:
        return
    rng = np.random.default_rng(seed)
    sample = vectors if len(vectors) <= max_train else vectors[rng.choice(len(vectors), max_train, replace=False)]
    index.train(np.ascontiguousarray(sample, dtype=np.uint8 if is_binary(index) else np.float32))


def build(
    catalogue: Catalogue,
    name: str,
    out_dir: str | os.PathLike,
    m: int = 32,
    d: int = 128,
    nlist: int = 256,
    factory: str | None = None,
    nprobe: int = 40,
    max_train: int = 100_000,
    seed: int = 0,
) -> Path:
    """Build ``<out_dir>/<name>.index`` (+ ``.json`` mapping, ``.meta.json``) from every song of
    ``catalogue``; returns the index path. ``name`` is a plain file name, never a path. A catalogue of
    binary codes gets a faiss binary index (``factory`` default ``BIVF<nlist>``; ``m`` is unused) and ``d``
    counts bits."""
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise ValueError(f"{name!r}: an index name must be a plain name, not a path; choose the folder with out_dir")
    songs = catalogue.songs()
    n_total = sum(s.n_vectors for s in songs)
    if n_total == 0:
        raise ValueError(f"{catalogue.folder}: the catalogue is empty; extract fingerprints first")
    binary = catalogue.kind == "binary"
    dim = codes.dim(catalogue.vectors(songs[0]), catalogue.kind)
    if dim != d:
        raise ValueError(f"fingerprints are {dim}-{'bit' if binary else 'd'}, not {d} (-d)")
    wanted = factory or (binary_factory_string(nlist) if binary else factory_string(m, nlist))
    if binary != wanted.startswith("B"):
        raise ValueError(
            f"factory {wanted!r} is for {'float' if binary else 'binary'} vectors; the catalogue holds "
            f"{catalogue.kind} fingerprints ({'BIVF<nlist> or BFlat' if binary else 'e.g. IVF256,PQ32'})"
        )
    better = large_catalogue_choice(n_total) if factory is None and not binary else None
    if better:
        print(
            f"note: {n_total:,} windows in {nlist} lists, nprobe {nprobe}: each query window scans about "
            f"{n_total * min(nprobe, nlist) // nlist:,} codes; for a catalogue this size --factory {better[0]} "
            f'--nprobe {better[1]} was measured about 20x faster at about the same recall (README, "Choosing an '
            f'index for a large catalogue")'
        )
    fitted, notes = _fit_factory(wanted, n_total)
    for note in notes:
        print(f"note: {note}")
    index = new_binary_index(fitted, d) if binary else new_index(fitted, d)
    if not index.is_trained:  # on a random sample, read from the store without loading the rest
        index.train(catalogue.sample(max_train, seed))
    for ids, vectors in catalogue.iter_vectors(songs):  # in chunks: the catalogue need not fit in memory
        index.add_with_ids(vectors, ids)
    set_nprobe(index, nprobe)
    path = Path(out_dir) / f"{name}.index"
    _save(index, path, catalogue, {"factory": fitted, "requested_factory": wanted, "notes": notes})
    return path


def _save(index: faiss.Index, path: Path, catalogue: Catalogue, extra: dict | None = None) -> None:
    storage.clean_stale_temps(path.parent)  # what a killed earlier write left behind
    mp = meta_path(path)
    meta = storage.read_json(mp) if mp.exists() and extra is None else {}
    meta.update(extra or {})
    meta.update(
        {
            "metric": "hamming" if is_binary(index) else "inner_product",
            "d": index.d,
            "ntotal": int(index.ntotal),
            "nprobe": get_nprobe(index),
            "catalogue": str(catalogue.folder.resolve()),
            "catalogue_state": catalogue.state(),
            "songs": len(catalogue.songs()),
            "model": catalogue.model or {},
            "bytes_per_vector": bytes_per_vector(index),
        }
    )
    with storage.atomic_path(path) as tmp:
        (faiss.write_index_binary if is_binary(index) else faiss.write_index)(index, str(tmp))
        meta["file"] = file_record(tmp)  # what loading checks the file against (check_index_file)
    storage.write_json(mapping_path(path), {str(s.first_vector): s.name for s in catalogue.songs()})
    storage.write_json(mp, meta)


def file_record(path: str | os.PathLike) -> dict:
    """What identifies an index file's content: ``bytes``, ``sha256`` (of the whole file) and, for a file over
    :data:`FULL_CHECK_BYTES`, ``sampled_sha256`` (:func:`sampled_sha256`); kept in ``NAME.meta.json``."""
    size = os.path.getsize(path)
    record = {"bytes": size, "sha256": storage.file_checksum(path)}
    if size > FULL_CHECK_BYTES:
        record["sampled_sha256"] = sampled_sha256(path)
    return record


def sampled_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of parts of a file: its first :data:`SAMPLE_HEAD` bytes, :data:`SAMPLE_BLOCKS` blocks of
    :data:`SAMPLE_BLOCK` bytes evenly spread after them, and its last :data:`SAMPLE_BLOCK` bytes (with the
    file's size)."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    spans = [(0, min(size, SAMPLE_HEAD))]
    if size > SAMPLE_HEAD:
        starts = np.linspace(SAMPLE_HEAD, max(SAMPLE_HEAD, size - SAMPLE_BLOCK), SAMPLE_BLOCKS + 1).astype(np.int64)
        spans += [(int(a), SAMPLE_BLOCK) for a in starts]
    with open(path, "rb") as f:
        for start, n in spans:
            h.update(os.pread(f.fileno(), n, start))
    return h.hexdigest()


def check_index_file(path: str | os.PathLike, meta: dict, full: bool = False, rebuild: str = "rebuild it") -> bool:
    """Check the index file ``path`` against the size and checksum its metadata ``meta`` recorded when it was
    written: the whole file's SHA-256 up to :data:`FULL_CHECK_BYTES` (or with ``full``), else the sampled
    one. :class:`BadFileError` if they differ; False if nothing was recorded (an index of an older fplib)."""
    record = meta.get("file")
    if not isinstance(record, dict) or "sha256" not in record:
        return False
    size = os.path.getsize(path)
    if size != record.get("bytes"):
        raise BadFileError(
            path,
            f"its content differs from the checksum recorded when it was written: {size} bytes, not the "
            f"{record.get('bytes')} written (damaged, truncated or replaced); {rebuild}",
        )
    sampled = not full and size > FULL_CHECK_BYTES and "sampled_sha256" in record
    got = sampled_sha256(path) if sampled else storage.file_checksum(path)
    if got != record["sampled_sha256" if sampled else "sha256"]:
        raise BadFileError(
            path,
            f"its content differs from the checksum recorded when it was written ({'sampled ' if sampled else ''}"
            f"SHA-256 {got[:12]}..., recorded {record['sampled_sha256' if sampled else 'sha256'][:12]}...): damaged "
            f"or replaced, its answers cannot be trusted; {rebuild}",
        )
    return True


def rescore(
    index: faiss.Index, catalogue: Catalogue, samples: int, songs: list[Song] | None = None, seed: int | None = None
) -> tuple[int, int]:
    """Search ``samples`` windows of ``catalogue`` (``songs``: its songs, default all), drawn at random (all if
    there are no more), in ``index`` for their :data:`RESCORE_K` nearest; returns ``(found, searched)``: how many
    found their own id among them, or first a window nearly identical to them (:data:`RESCORE_NEAR`)."""
    songs = catalogue.songs() if songs is None else songs
    first = np.array([s.first_vector for s in songs], np.int64)
    lengths = np.array([s.n_vectors for s in songs], np.int64)
    total = int(lengths.sum())
    if not total:
        return 0, 0
    rng = np.random.default_rng(seed)
    pick = np.arange(total) if total <= samples else np.sort(rng.choice(total, samples, replace=False))
    cum = np.concatenate([[0], np.cumsum(lengths)])
    si = np.searchsorted(cum, pick, side="right") - 1
    ids = first[si] + (pick - cum[si])
    x = _fingerprints(catalogue, songs, si, pick - cum[si])
    _, got = index.search(np.ascontiguousarray(x), RESCORE_K)
    found = (got == ids[:, None]).any(axis=1)
    top = got[:, 0]
    j = np.searchsorted(first, top, side="right") - 1
    inside = (top >= 0) & (j >= 0) & (top < first[np.maximum(j, 0)] + lengths[np.maximum(j, 0)])
    if inside.any():
        y = _fingerprints(catalogue, songs, j[inside], top[inside] - first[j[inside]])
        near = np.zeros(len(ids), bool)
        near[inside] = codes.similarity(x[inside], y, catalogue.kind) >= RESCORE_NEAR
        found |= near
    return int(found.sum()), len(ids)


def _fingerprints(catalogue: Catalogue, songs: list[Song], si: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Window ``offsets[k]`` of song ``songs[si[k]]`` for each k, as :meth:`Catalogue.vectors` gives them."""
    dtype = codes.stored_dtype(catalogue.kind)
    if not catalogue.legacy:
        return np.asarray(catalogue.matrix()[catalogue.rows_of(songs)[si] + offsets], dtype=dtype)
    out = None
    for i in np.unique(si):  # an older catalogue's per-song files: only the songs drawn are read
        v = catalogue.vectors(songs[i])
        out = np.zeros((len(si), v.shape[1]), dtype) if out is None else out
        out[si == i] = v[offsets[si == i]]
    return out


def read_index(path: str | os.PathLike) -> faiss.Index:
    """``faiss.read_index`` (or ``read_index_binary`` for a binary index, whose faiss header starts with
    ``IB``), with :class:`BadFileError` naming the file instead of faiss's C++ error."""
    check_file(path)
    with open(path, "rb") as f:
        binary = f.read(2) == b"IB"
    try:
        return (faiss.read_index_binary if binary else faiss.read_index)(str(path))
    except (RuntimeError, MemoryError) as e:
        detail = " ".join(str(e).split()).rsplit("Error: ", 1)[-1].replace(f" in {path}", "")
        detail = detail.split(" failed: ", 1)[-1]  # faiss's assertion text says nothing to a user
        raise BadFileError(path, f"not a readable faiss index, truncated or corrupt (faiss: {detail[:200]})") from None


def mapping_path(path: str | os.PathLike) -> Path:
    """``NAME.json``: ``{first vector id of a song: song name}`` (the seed's mapping)."""
    return Path(path).with_suffix(".json")


def meta_path(path: str | os.PathLike) -> Path:
    """``NAME.meta.json``: how the index was built, from which catalogue state and model."""
    return Path(path).with_suffix(".meta.json")


def read_meta(path: str | os.PathLike) -> dict:
    """An index's ``NAME.meta.json``, checked (:class:`BadFileError` if missing, not JSON or incomplete)."""
    mp = meta_path(path)
    if not os.path.lexists(mp):
        raise BadFileError(
            mp, f"missing: the metadata of {path} (written with it by create_faiss_indexes); rebuild the index"
        )
    meta = read_json(mp, "index metadata file")
    if not isinstance(meta, dict):
        raise BadFileError(mp, f"not an fplib index metadata file: it holds {json_type(meta)}, not an object")
    missing = [k for k in ("catalogue_state", "ntotal", "d") if k not in meta]
    if missing:
        raise BadFileError(mp, f"not a complete fplib index metadata file (no {', '.join(map(repr, missing))})")
    return meta


def _describe_model(model: dict | None) -> str:
    if not model:
        return "no model recorded"
    sha = str(model.get("sha256") or "")
    return f"{model.get('checkpoint', 'a model')}, SHA-256 {sha[:12]}..." if sha else str(model)


def _check_model(path: Path, meta: dict, catalogue: Catalogue, rebuild: str) -> None:
    """Refuse an index whose vectors another model made than the catalogue's."""
    if "model" not in meta:
        raise BadFileError(
            path,
            f"built by an older fplib that did not record which model made its vectors, so it "
            f"cannot be checked against the catalogue; {rebuild}",
        )
    if not isinstance(meta["model"], dict) or not same_model(meta["model"], catalogue.model or {}):
        raise BadFileError(
            path,
            f"built from the fingerprints of another model ({_describe_model(meta['model'])}) "
            f"than the catalogue {catalogue.folder} ({_describe_model(catalogue.model)}); "
            f"its neighbours would be meaningless; {rebuild}",
        )


def _rebuild(path: Path, catalogue: Catalogue) -> str:
    return f"rebuild it: create_faiss_indexes -i {catalogue.folder} -n {path.stem} -o {path.parent}"


def load(
    path: str | os.PathLike,
    catalogue: Catalogue,
    nprobe: int | None = None,
    checksum: bool = True,
    samples: int = RESCORE_SAMPLES,
) -> faiss.Index:
    """Read an index and check that it matches ``catalogue``; set ``nprobe`` (default: as saved).

    Every file of the index is checked: ``NAME.index`` (a readable faiss index of the catalogue's
    vectors, whose content is the one written: :func:`check_index_file`, unless not ``checksum``),
    ``NAME.meta.json`` (the catalogue state and the model the index was built from) and ``NAME.json`` (the
    song mapping); a problem raises :class:`BadFileError` naming the file. Then ``samples`` windows of the
    catalogue are searched in it (:func:`rescore`): if fewer than half find themselves, the index (or the
    catalogue's store) is damaged, and :class:`BadFileError` says so."""
    path = Path(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: no index (notebook 05 or create_faiss_indexes builds it)")
    check_file(path)
    meta = read_meta(path)
    rebuild = _rebuild(path, catalogue)
    _check_model(path, meta, catalogue, rebuild)
    index = read_index(path)
    if checksum:
        check_index_file(path, meta, rebuild=rebuild)
    if is_binary(index) != (catalogue.kind == "binary"):
        raise BadFileError(
            path,
            f"a {'binary' if is_binary(index) else 'float'} index, but the catalogue "
            f"{catalogue.folder} holds {catalogue.kind} fingerprints; {rebuild}",
        )
    songs = catalogue.songs()
    n_cat = sum(s.n_vectors for s in songs)
    if meta.get("catalogue_state") != catalogue.state() or index.ntotal != n_cat:
        raise BadFileError(
            path,
            f"built from another state of the catalogue ({index.ntotal} vectors, catalogue "
            f"{catalogue.folder} has {n_cat}); {rebuild}, or add/remove songs through "
            f"fplib db",
        )
    if index.ntotal == 0:
        raise BadFileError(path, "the index is empty")
    if index.d != meta.get("d") or (songs and index.d != codes.dim(catalogue.vectors(songs[0]), catalogue.kind)):
        raise BadFileError(path, f"holds {index.d}-d vectors, not the catalogue's fingerprints; {rebuild}")
    mp = mapping_path(path)
    if not os.path.lexists(mp):
        raise BadFileError(mp, f"missing: the song mapping of {path} (written with it); {rebuild}")
    mapping = read_json(mp, "index song mapping")
    if mapping != {str(s.first_vector): s.name for s in songs}:
        what = f"{len(mapping)} songs" if isinstance(mapping, dict) else json_type(mapping)
        raise BadFileError(
            mp,
            f"not the song mapping of the catalogue {catalogue.folder} (it holds {what}, "
            f"the catalogue {len(songs)} songs); {rebuild}",
        )
    if samples:
        set_nprobe(index, meta.get("nprobe") or 1)  # searched as it was built to be
        found, searched = rescore(index, catalogue, samples, songs)
        if 2 * found < searched:
            raise BadFileError(path, rescore_failed(found, searched, catalogue, rebuild))
    set_nprobe(index, nprobe if nprobe is not None else (meta.get("nprobe") or 1))
    return index


def rescore_failed(found: int, searched: int, catalogue: Catalogue, rebuild: str) -> str:
    """Why an index whose :func:`rescore` found fewer than half of ``searched`` windows is refused."""
    return (
        f"searching {searched} of the catalogue's own windows in it found only {found} of them (an undamaged "
        f"index finds nearly all): the index is damaged or was not built from these fingerprints, or the "
        f"catalogue's store is damaged (fplib db verify --catalogue {catalogue.folder} checks it); {rebuild}"
    )


def add_songs(
    path: str | os.PathLike, catalogue: Catalogue, songs: list[Song], replaced: list[Song] = ()
) -> faiss.Index:
    """Add songs already in ``catalogue`` (e.g. by :func:`fplib.extraction.extract`) to the index at ``path``,
    and take out the songs they ``replaced`` (no longer in the catalogue: :meth:`Catalogue.add`'s ``replace``).

    The index is checked against the catalogue without those songs (and with those replaced), updated, and
    saved atomically with its mapping and metadata."""
    path = Path(path)
    new_ids = {s.id for s in songs}
    meta = read_meta(path)
    _check_model(path, meta, catalogue, _rebuild(path, catalogue))
    index = read_index(path)
    expected = sum(s.n_vectors for s in catalogue.songs() if s.id not in new_ids) + sum(s.n_vectors for s in replaced)
    if index.ntotal != expected:
        raise BadFileError(path, f"holds {index.ntotal} vectors, the catalogue without the new songs {expected}")
    for s in replaced:
        removed = index.remove_ids(faiss.IDSelectorRange(s.first_vector, s.first_vector + s.n_vectors))
        if removed != s.n_vectors:
            raise BadFileError(path, f"removed {removed} vectors of song {s.id}, expected {s.n_vectors}")
    ids, vectors = catalogue.all_vectors(songs)
    if len(ids):
        index.add_with_ids(vectors, ids)
    set_nprobe(index, meta.get("nprobe") or 1)
    _save(index, path, catalogue, None)
    return index


def remove_songs(path: str | os.PathLike, catalogue: Catalogue, song_ids: list[int]) -> faiss.Index:
    """Remove songs from the index at ``path`` and from ``catalogue``, keeping both consistent."""
    path = Path(path)
    index = load(path, catalogue)
    for sid in song_ids:  # in memory first: nothing on disk changes unless every song comes out cleanly
        s = catalogue.song(sid)
        removed = index.remove_ids(faiss.IDSelectorRange(s.first_vector, s.first_vector + s.n_vectors))
        if removed != s.n_vectors:
            raise BadFileError(path, f"removed {removed} vectors of song {sid}, expected {s.n_vectors}")
    catalogue.remove_many(song_ids)  # one transaction
    _save(index, path, catalogue, None)
    return index


def merge(paths: list[str | os.PathLike]) -> faiss.Index:
    """Merge IVF indexes built separately from one trained quantiser (faiss ``merge_from``)."""
    first = read_index(paths[0])
    for p in paths[1:]:
        other = read_index(p)
        first.merge_from(other, 0)
    return first


def bytes_per_vector(index: faiss.Index) -> float:
    """Bytes a stored vector costs: its code, plus its id in an inverted list or id map."""
    ivf = _ivf(index)
    if ivf is not None:
        return float(ivf.code_size + 8)
    if is_binary(index):
        return float(index.code_size + 8)
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return float(inner.sa_code_size() + 8)
