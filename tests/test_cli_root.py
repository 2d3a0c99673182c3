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
