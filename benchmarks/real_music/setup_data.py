"""Fetch openly licensed real music and ambient noise from Debian packages into data/ (git-ignored).

    python benchmarks/real_music/setup_data.py        # skipped when the files are already there

Uses `apt-get download` + `dpkg-deb -x` (no installation, nothing touched outside data/), and records
each package's version and licences in data/LICENSES.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
PACKAGES = {  # package: (what, glob of the files used, relative to the extracted package)
    "supertux-data": ("training music", "usr/share/games/supertux2/music/**/*.ogg"),
    "hedgewars-data": ("held-out music", "usr/share/games/hedgewars/Data/Music/*.ogg"),
    "colobot-common-sounds": ("held-out music", "usr/share/games/colobot/music/*.ogg"),
    "megaglest-data": ("ambient noise", "usr/share/games/megaglest/tilesets/*/sounds/*"),
}


def files(package: str, data: Path = DATA) -> list[Path]:
    """The audio files a package provides in ``data`` (default: the fetched data), sorted (empty if not set up)."""
    pattern = PACKAGES[package][1]
    found = sorted((data / package).glob(pattern))
    return [p for p in found if p.suffix.lower() in (".ogg", ".wav")]


def setup() -> None:
    DATA.mkdir(exist_ok=True)
    licences = ["# Licences of the benchmark data\n"]
    for package, (what, _) in PACKAGES.items():
        target = DATA / package
        if not (target / ".complete").exists():
            with tempfile.TemporaryDirectory() as tmp:
                r = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
                if r.returncode != 0:
                    sys.exit(f"apt-get download {package} failed (run `apt-get update` first?):\n{r.stderr}")
                deb = next(Path(tmp).glob(f"{package}_*.deb"))
                shutil.rmtree(target, ignore_errors=True)
                subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
                (target / ".complete").write_text(deb.name + "\n")
        copyright_file = target / "usr/share/doc" / package / "copyright"
        found = sorted(set(re.findall(r"^License: (.+)$", copyright_file.read_text(errors="replace"), re.M)))
        deb_name = (target / ".complete").read_text().strip()
        licences.append(
            f"- **{package}** ({deb_name}, {what}, {len(files(package))} files): {', '.join(found)}; "
            f"see `{copyright_file.relative_to(HERE)}`\n"
        )
        print(f"{package}: {len(files(package))} files ({what})")
    (DATA / "LICENSES.md").write_text("".join(licences))


if __name__ == "__main__":
    setup()
