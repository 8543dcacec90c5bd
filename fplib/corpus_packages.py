"""The Debian packages the real corpus (:mod:`fplib.corpus`) is built from, and the files it takes from them.

A :class:`Source` names files of one package used in one role; :func:`fetch` downloads the package
(``apt-get download``), :func:`unpack` unpacks it (``dpkg-deb -x``: nothing is installed), :func:`items` lists
the files a source names in it (also inside zip archives such as 0 A.D.'s ``public.zip`` and the Quake-style
``.pk3`` files), and the licences come from the package's machine-readable copyright file
(:func:`package_licence`, :func:`licence_for`).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fplib import audio

# the files a render source takes, by its kind (fplib.corpus_render renders them)
RENDERED = {"midi": (".mid", ".midi"), "module": (".it", ".s3m", ".xm", ".mod"), "soundfont": (".sf2",)}


class CorpusError(RuntimeError):
    """The corpus cannot be built: a package cannot be fetched or unpacked, is not one of the corpus's, or a
    renderer does not run."""


@dataclass(frozen=True)
class Source:
    """Files of one Debian package used in one role. ``include``: globs relative to the unpacked
    package; ``ARCHIVE::GLOB`` names members of a zip archive (``.zip``, ``.pk3``) inside it.
    ``render``: the files are not audio files: ``"midi"`` scores (rendered by FluidSynth through one of the
    :data:`fplib.corpus_render.SOUNDFONTS`), ``"module"`` (tracker modules, rendered by libopenmpt's
    ``openmpt123``) or ``"soundfont"`` (the recorded samples a SoundFont holds, read by
    :func:`fplib.corpus_render.soundfont_samples`) or ``"music21"`` (works of the corpus the ``music21`` package
    ships, not a Debian package: :func:`fplib.corpus.music21_works`, rendered in
    :data:`fplib.corpus.SCORE_VERSIONS` instrumentations by :class:`fplib.corpus_render.Renderer`)."""

    package: str
    role: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    render: str | None = None


# -- fetching and unpacking ---------------------------------------------------------------------------


def fetch(package: str, debs: Path) -> Path:
    """The package's ``.deb`` in ``debs`` (downloaded with ``apt-get download`` if not there)."""
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    with tempfile.TemporaryDirectory(dir=debs) as tmp:
        r = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
        got = sorted(Path(tmp).glob(f"{package}_*.deb"))
        if r.returncode != 0 or not got:
            raise CorpusError(
                f"apt-get download {package} failed (run `apt-get update` once first; "
                f"on a machine without Debian's apt, copy {package}_*.deb into {debs}): "
                f"{r.stderr.strip()[-300:]}"
            )
        os.replace(got[0], debs / got[0].name)
    return debs / got[0].name


def unpack(deb: Path, target: Path) -> Path:
    """``dpkg-deb -x`` into ``target`` (once: a ``.complete`` marker names the unpacked ``.deb``)."""
    marker = target / ".complete"
    if marker.exists() and marker.read_text().strip() == deb.name:
        return target
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    r = subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CorpusError(f"{deb}: dpkg-deb -x failed: {r.stderr.strip()[-300:]}")
    (tmp / ".complete").write_text(deb.name + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def version_of(deb: Path) -> str:
    """The package version named in a ``.deb`` file name (``name_version_arch.deb``)."""
    parts = deb.name[: -len(".deb")].split("_")
    return parts[1].replace("%3a", ":") if len(parts) >= 3 else "unknown"


# -- licences ------------------------------------------------------------------------------------------


def licences(copyright_text: str) -> list[tuple[list[str], str]]:
    """``(file patterns, licence)`` of each ``Files:`` stanza of a machine-readable Debian copyright
    file, in order (later stanzas win, as in the format's rules)."""
    out = []
    for stanza in re.split(r"\n\s*\n", copyright_text):
        files = re.search(r"^Files:\s*(.+(?:\n[ \t]+.+)*)", stanza, re.M)
        lic = re.search(r"^License:\s*(.+)$", stanza, re.M)
        if files and lic:
            out.append((files.group(1).split(), lic.group(1).strip()))
    return out


def licence_for(member: str, stanzas: list[tuple[list[str], str]], fallback: str) -> str:
    """The licence of the stanza whose pattern matches ``member`` (its path in the package or archive):
    the pattern's tail is compared with the path's tail, since source and installed paths differ."""
    found = None
    parts = member.split("/")
    for patterns, lic in stanzas:
        for pat in patterns:
            pp = pat.strip("/").split("/")
            if pat == "*":
                found = found or lic
                continue
            n = len(pp)
            if any(fnmatch.fnmatch("/".join(parts[i : i + n]), "/".join(pp)) for i in range(len(parts) - n + 1)):
                found = lic
    return found or fallback


def package_licence(root: Path, package: str) -> tuple[list[tuple[list[str], str]], str]:
    path = root / "usr/share/doc" / package / "copyright"
    text = path.read_text(errors="replace") if path.exists() else ""
    stanzas = licences(text)
    names = sorted({lic for _, lic in stanzas}) or sorted(set(re.findall(r"^License: (.+)$", text, re.M)))
    if not names:  # a copyright file in prose (not machine-readable): the GPL notice it quotes
        flat = " ".join(text.split())
        for version in ("2", "3"):
            if re.search(rf"GNU General Public License.{{0,200}}version {version}\b.{{0,80}}any later version", flat):
                names = [f"GPL-{version}+"]
                break
        if not names and re.search(r"\bMIT licen[cs]e|\(MIT\b|Permission is hereby granted, free of charge", flat):
            names = ["MIT"]
    return stanzas, (" / ".join(names) if names else "see the package's copyright file")


# -- enumerating files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One file a :class:`Source` names (its :attr:`key` identifies it in the corpus's records)."""

    source: Source
    path: Path  # the file, or the archive holding it
    member: str  # the path inside the package (and archive: "ARCHIVE::MEMBER")
    in_archive: str | None = None

    @property
    def key(self) -> str:
        return f"{self.source.role}:{self.source.package}:{self.member}"


def items(source: Source, root: Path) -> list[Item]:
    """The audio files of ``source`` in the unpacked package ``root``, sorted."""
    out = []
    for inc in source.include:
        glob, _, member_glob = inc.partition("::")
        for path in sorted(root.glob(glob)):
            rel = str(path.relative_to(root))
            if member_glob:
                with zipfile.ZipFile(path) as z:
                    for m in sorted(z.namelist()):
                        if _is_audio(m, source.render) and fnmatch.fnmatch(m, member_glob):
                            out.append(Item(source, path, f"{rel}::{m}", m))
            elif path.is_file() and _is_audio(rel, source.render):
                out.append(Item(source, path, rel))
    return [i for i in out if not any(fnmatch.fnmatch(i.member, e) for e in source.exclude)]


def _is_audio(name: str, render: str | None = None) -> bool:
    return Path(name).suffix.lower() in (RENDERED[render] if render else audio.AUDIO_EXTENSIONS)


def extracted(item: Item, folder: Path) -> Path:
    """``item``'s file copied into ``folder`` under its own name (out of its zip archive if it is in one)."""
    dest = folder / Path(item.member.split("::")[-1]).name
    if item.in_archive is None:
        shutil.copyfile(item.path, dest)
    else:
        with zipfile.ZipFile(item.path) as z, z.open(item.in_archive) as src, open(dest, "wb") as f:
            shutil.copyfileobj(src, f)
    return dest
