from __future__ import annotations

from unicxr import __version__


def test_version_and_help(cli):
    out = cli("--version", check=True)
    assert out.stdout.strip() == f"unicxr {__version__}"
    helptext = cli("--help", check=True).stdout
    assert "train" in helptext


def test_unknown_command_fails(cli):
    out = cli("no-such-command")
    assert out.returncode != 0


def test_registering_every_command_does_not_import_torch():
    """Commands import heavy libraries in their bodies: `unicxr phantom` and `--help` start without
    torch (importing it costs seconds of every short command)."""
    import subprocess
    import sys

    code = "import sys, unicxr.cli as c; c._register_all(); print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_runs_the_cli():
    """`python -m unicxr` is the same CLI as the `unicxr` script (errors and exit codes included)."""
    import subprocess
    import sys

    from unicxr import __version__

    out = subprocess.run([sys.executable, "-m", "unicxr", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"unicxr {__version__}"
    bad = subprocess.run([sys.executable, "-m", "unicxr", "encode", "--model", "/nonexistent", "--cache", "/nonexistent",
                          "--out", "/tmp/never"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
