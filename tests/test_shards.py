"""Extraction sharded over processes with torchrun (2 Gloo ranks on the CPU), merged into one catalogue
identical in content to a single process's; the same merge by hand with ``fplib db merge``."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fplib import cli
from fplib.catalogue import Catalogue
from fplib.extraction import shard_folder
from tests.helpers import make_folders, write
from tests.test_cli import _checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    songs = make_folders(root, n_songs=5, seconds=6.0)["songs"]
    (songs / "broken.mp3").write_text("not audio")
    write(songs / "too short.wav", np.zeros(800, np.float32) + 0.1, 8000)
    ckpt = _checkpoint(root / "model.pt")
    single = root / "single"
    assert (
        cli.main(
            [
                "generate_fingerprints",
                "-i",
                str(songs),
                "-o",
                str(single),
                "--model",
                str(ckpt),
                "--no_progress",
                "--workers",
                "0",
            ]
        )
        == 1
    )  # two files skipped
    return dict(root=root, songs=songs, ckpt=ckpt, single=single)


def _same_content(a: Path, b: Path) -> None:
    with Catalogue(a) as ca, Catalogue(b) as cb:
        sa, sb = ca.songs(), cb.songs()
        assert [(s.name, s.first_vector, s.n_vectors, s.checksum, s.path) for s in sa] == [
            (s.name, s.first_vector, s.n_vectors, s.checksum, s.path) for s in sb
        ]
        for x, y in zip(sa, sb):  # the same network on the same windows, in another process and thread count
            np.testing.assert_allclose(ca.vectors(x), cb.vectors(y), atol=1e-5)
        assert ca.state() == cb.state()  # so an index built from one is valid for the other


def _torchrun(world, out: Path, *extra) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FPLIB_ENGINE": "torch"}  # no ONNX export in each rank
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "fplib.cli",
            "generate_fingerprints",
            "-i",
            str(world["songs"]),
            "-o",
            str(out),
            "--model",
            str(world["ckpt"]),
            "--no_progress",
            "--workers",
            "0",
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.mark.slow
def test_two_ranks_give_the_single_process_catalogue_and_a_rerun_adds_nothing(world, tmp_path):
    out = tmp_path / "cat"
    r = _torchrun(world, out)
    assert r.returncode == 1, r.stderr[-3000:]  # the two unusable files, reported once with their reasons
    assert "5 song(s) added" in r.stdout and "2 skipped" in r.stdout
    assert "broken.mp3" in r.stderr and "too short.wav" in r.stderr
    assert not shard_folder(out, 0, 2).parent.exists()  # the shards are gone once merged
    _same_content(world["single"], out)
    again = _torchrun(world, out)
    assert "0 song(s) added" in again.stdout and "5 already there" in again.stdout, again.stdout + again.stderr
    _same_content(world["single"], out)


@pytest.mark.slow
def test_shards_merged_by_hand_and_a_merge_resumes(world, tmp_path, capsys):
    files = sorted(world["songs"].glob("song_*.flac"))
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, part in ((a, files[:3]), (b, files[3:])):
        assert (
            cli.main(
                [
                    "generate_fingerprints",
                    "-i",
                    *map(str, part),
                    "-o",
                    str(folder),
                    "--model",
                    str(world["ckpt"]),
                    "--no_progress",
                    "--workers",
                    "0",
                ]
            )
            == 0
        )
    out = tmp_path / "merged"
    assert cli.main(["db", "merge", "--catalogue", str(out), str(a), "--no_progress"]) == 0
    assert cli.main(["db", "merge", "--catalogue", str(out), str(a), str(b), "--no_progress"]) == 0
    assert "2 song(s) added from 2 catalogue(s); 5 songs in the catalogue" in capsys.readouterr().out
    with Catalogue(out) as m, Catalogue(world["single"]) as s:
        # names are the files' stems here (files were given one by one), vectors those of one process
        by_sum = {x.checksum: x for x in s.songs()}
        assert [(x.first_vector, x.checksum) for x in m.songs()] == [(x.first_vector, x.checksum) for x in s.songs()]
        for x in m.songs():
            np.testing.assert_allclose(m.vectors(x), s.vectors(by_sum[x.checksum]), atol=1e-5)
    assert cli.main(["create_faiss_indexes", "-i", str(out), "-n", "m", "-o", str(tmp_path / "idx")]) == 0
    other = tmp_path / "other"
    _checkpoint(other.with_suffix(".pt"), seed=1)
    assert (
        cli.main(
            [
                "generate_fingerprints",
                "-i",
                str(files[0]),
                "-o",
                str(other),
                "--model",
                str(other.with_suffix(".pt")),
                "--no_progress",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    assert cli.main(["db", "merge", "--catalogue", str(out), str(other), "--no_progress"]) == 2
    assert "fingerprints of different models cannot be mixed" in capsys.readouterr().err
