"""HH-suite databases built with HH-suite's own tools (Debian package hhsuite), the way BFD, UniRef30 and pdb70 are
made: one MSA per entry, `ffindex_build` over them (<prefix>_a3m), `hhmake` of each into an HMM (<prefix>_hhm)
and `cstranslate` into the column-state sequences HHblits prefilters with (<prefix>_cs219).

    build(prefix, entries)   entries: (name, a3m text) -> <prefix>_{a3m,hhm,cs219}.{ffdata,ffindex}
    available()              whether the tools are installed (the missing one named otherwise)

The demo database's tiny BFD, UniRef30 and pdb70 and the tests' databases are built here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from af2jobs.errors import DatabaseError

HHSUITE_DATA = Path(os.environ.get("HHLIB", "/usr/share/hhsuite")) / "data"
TOOLS = ("ffindex_build", "ffindex_apply", "hhmake")


def cstranslate() -> str | None:
    """HH-suite's cstranslate: on PATH, or (Debian) per instruction set under /usr/libexec/hhsuite."""
    return shutil.which("cstranslate") or next(
        (str(p) for p in sorted(Path("/usr/libexec/hhsuite").glob("cstranslate-plain")) if p.is_file()), None)


def missing_tools() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    return missing + ([] if cstranslate() else ["cstranslate"])


def _run(*cmd: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DatabaseError(f"{Path(cmd[0]).name} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")


def build(prefix: Path, entries: Iterable[tuple[str, str]]) -> Path:
    """An HH-suite database at `prefix` (a3m, hhm and cs219 ffindex pairs) with one MSA per entry; `prefix`."""
    missing = missing_tools()
    if missing:
        raise DatabaseError(f"HH-suite is not installed ({', '.join(missing)} missing): install the Debian "
                            "package hhsuite (make tools)")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="af2-hhdb-") as tmp:
        a3m_dir = Path(tmp) / "a3m"
        a3m_dir.mkdir()
        for name, a3m in entries:
            (a3m_dir / name).write_text(a3m)
        _run("ffindex_build", "-s", f"{prefix}_a3m.ffdata", f"{prefix}_a3m.ffindex", str(a3m_dir))
    _run("ffindex_apply", f"{prefix}_a3m.ffdata", f"{prefix}_a3m.ffindex", "-i", f"{prefix}_hhm.ffindex",
         "-d", f"{prefix}_hhm.ffdata", "--", "hhmake", "-i", "stdin", "-o", "stdout", "-v", "0")
    _run(cstranslate(), "-f", "-x", "0.3", "-c", "4", "-I", "a3m", "-i", f"{prefix}_a3m", "-o", f"{prefix}_cs219",
         "-A", str(HHSUITE_DATA / "cs219.lib"), "-D", str(HHSUITE_DATA / "context_data.lib"))
    return prefix


__all__ = ["HHSUITE_DATA", "build", "cstranslate", "missing_tools"]
