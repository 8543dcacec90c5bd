"""Print pip's index settings as uv options, so that `make venv` installs the lock with uv from the same
places pip would (uv reads neither pip.conf nor PIP_* variables).

pip's effective configuration (`pip config list`: files and PIP_* environment variables) gives
find-links, index-url and extra-index-url; each becomes the uv option of the same name, and uv is told to
look for a pin in every index (pip's way) rather than stopping at the first that has the package."""

import shlex
import subprocess
import sys

listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
args: list[str] = []
for line in listed.splitlines():
    key, _, value = line.partition("=")
    name = key.rsplit(".", 1)[-1]
    if name in ("find-links", "index-url", "extra-index-url"):
        for v in value.strip().strip("'\"").split():
            option = f"--{'default-index' if name == 'index-url' else name}"
            if [option, v] != args[-2:] and f"{option} {v}" not in " ".join(args):
                args += [option, v]
print(shlex.join([*args, "--index-strategy", "unsafe-best-match"]))
