"""tune_malloc: large buffers come from the reusable heap, not from fresh mmaps (glibc)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

_PROBE = r"""
import ctypes, sys
import numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "1":
    from unicxr.utils.memory import tune_malloc
    tune_malloc()
a = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, above glibc's largest mmap threshold
info = libc.mallinfo2()
print(info.hblkhd >= a.nbytes, info.arena >= a.nbytes)
"""


def _probe(tuned: bool) -> str:
    out = subprocess.run([sys.executable, "-c", _PROBE, "1" if tuned else "0"], capture_output=True, text=True,
                         check=True, env={"UNICXR_MALLOC_TUNING": "1", "PATH": ""})
    return out.stdout.strip()


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc", reason="glibc only")
def test_tuned_process_serves_a_64mib_buffer_from_the_heap() -> None:
    assert _probe(tuned=False) == "True False"  # glibc's default: a fresh mmap, unmapped when freed
    assert _probe(tuned=True) == "False True"  # tuned: from the heap, reused by the next allocation


def test_cli_root_tunes_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import unicxr.utils.memory as memory
    from unicxr.cli import app

    calls: list[int] = []
    monkeypatch.setattr(memory, "tune_malloc", lambda: calls.append(1))
    CliRunner().invoke(app, ["label", "--help"])
    assert calls == [1]
