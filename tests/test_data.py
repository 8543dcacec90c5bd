import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fplib import audio
from fplib.augment import Augmenter
from fplib.data import (
    IRBank,
    NoiseBank,
    SegmentDataset,
    Skipped,
    collate_segments,
    item_rng,
    read_with_context,
    slice_with_context,
    split_files,
    worker_init_fn,
)
from tests.helpers import make_folders, tone, write


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    files = [tmp_path / f"{i}.wav" for i in range(10)]
    tr, va = split_files(files, 0.8, seed=0)
    assert len(tr) == 8 and len(va) == 2 and not set(tr) & set(va) and set(tr) | set(va) == set(files)
    assert split_files(files, 0.8, seed=0) == (tr, va)
    assert split_files(files, 0.8, seed=1) != (tr, va)
    assert split_files(files[:2], 0.99, 0)[1] and split_files(files[:2], 0.01, 0)[0]  # both sides non-empty
    assert split_files(files[:1], 0.8, 0) == (files[:1], files[:1])
    with pytest.raises(ValueError, match="train_ratio"):
        split_files(files, 1.0, 0)


def test_item_rng_is_stable_and_distinct():
    a = item_rng(0, "song", "a.wav").random(4)
    assert np.array_equal(a, item_rng(0, "song", "a.wav").random(4))
    assert not np.array_equal(a, item_rng(0, "song", "b.wav").random(4))
    assert not np.array_equal(a, item_rng(1, "song", "a.wav").random(4))


def test_read_with_context_pads_outside_the_file(tmp_path):
    x = tone(3.0)
    path = write(tmp_path / "a.wav", x, 8000)
    seg = read_with_context(path, 0.0, 1.0, 0.2, 3.0)
    assert seg.shape == (11200,)
    assert not seg[:1600].any()
    np.testing.assert_allclose(seg[1600:], x[: 11200 - 1600], atol=1e-4)


def test_banks_skip_bad_files_and_report(tmp_path):
    d = make_folders(tmp_path, n_songs=1)
    (d["noise"] / "broken.wav").write_bytes(b"RIFF0000WAVE")
    skipped = Skipped()
    noises = NoiseBank(audio.list_audio(d["noise"]), skipped=skipped)
    assert len(noises) == 3 and len(skipped.items) == 1 and "broken.wav" in skipped.report()
    assert noises.sample(np.random.default_rng(0), 50000).shape == (50000,)  # longer than any noise: looped
    irs = IRBank(audio.list_audio(d["rir"]), max_s=0.1)
    assert all(np.abs(ir).max() == 1.0 and len(ir) <= 20 + 800 + 1 for ir in irs.irs)


def _dataset(tmp_path):
    d = make_folders(tmp_path, n_songs=4, seconds=4.0)
    aug = Augmenter()
    return SegmentDataset(
        audio.list_audio(d["songs"]),
        NoiseBank(audio.list_audio(d["noise"])),
        IRBank(audio.list_audio(d["rir"])),
        aug.context,
        seed=3,
        items_per_song=4,
    )


def test_workers_draw_distinct_streams_and_match_single_process(tmp_path):
    ds = _dataset(tmp_path)
    kw = dict(batch_size=4, collate_fn=collate_segments, shuffle=False)
    single = list(DataLoader(ds, num_workers=0, **kw))
    multi = list(DataLoader(ds, num_workers=2, worker_init_fn=worker_init_fn, **kw))
    for a, b in zip(single, multi):
        for k in a:
            assert torch.equal(a[k], b[k]), k
    starts = torch.cat([b["start"] for b in multi])
    noise = torch.cat([b["noise"] for b in multi])
    assert len(set(starts.tolist())) == len(ds), "every item draws its own position"
    # batches handled by worker 0 and worker 1 are not copies of each other (a bug of the seed's scripts)
    assert not torch.equal(multi[0]["noise"], multi[1]["noise"])
    assert len({tuple(n[:8].tolist()) for n in noise}) > len(ds) // 2


def test_epochs_draw_afresh(tmp_path):
    ds = _dataset(tmp_path)
    a = ds[0]["start"]
    ds.set_epoch(1)
    assert ds[0]["start"] != a


def test_bad_songs_are_skipped_and_reported(tmp_path):
    d = make_folders(tmp_path, n_songs=2)
    (d["songs"] / "zz.mp3").write_text("not audio")
    write(d["songs"] / "short.wav", tone(0.5), 8000)
    skipped = Skipped()
    ds = SegmentDataset(audio.list_audio(d["songs"]), None, None, 1600, skipped=skipped)
    assert len(ds) == 2
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in skipped.items) == ["short.wav", "zz.mp3"]


def test_slice_with_context_matches_reading_the_file(tmp_path):
    x = tone(3.0)
    path = write(tmp_path / "a.wav", x, 8000)
    for start in (0.0, 0.1, 1.3, 2.0):  # padded before, inside, padded after
        np.testing.assert_array_equal(
            slice_with_context(audio.load(path), start, 1.0, 0.2, 8000), read_with_context(path, start, 1.0, 0.2, 3.0)
        )


def test_preloaded_dataset_gives_the_same_items(tmp_path):
    d = make_folders(tmp_path, n_songs=3, seconds=4.0, sr=8000)  # no resampling: both paths must agree exactly
    aug = Augmenter()
    songs = audio.list_audio(d["songs"])
    (d["songs"] / "empty.wav").write_bytes(b"")
    kw = dict(
        noises=NoiseBank(audio.list_audio(d["noise"])),
        irs=IRBank(audio.list_audio(d["rir"])),
        context=aug.context,
        seed=3,
        items_per_song=3,
    )
    lazy = SegmentDataset(songs, **kw)
    skipped = Skipped()
    held = SegmentDataset(audio.list_audio(d["songs"]), skipped=skipped, preload=True, **kw)
    assert len(held) == len(lazy) and held.decoded is not None and "empty.wav" in skipped.report()
    for i in range(len(held)):
        a, b = lazy[i], held[i]
        for k in a:
            np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-6, err_msg=k)
