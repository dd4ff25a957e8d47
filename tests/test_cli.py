import subprocess
import sys

from lmfuse.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "zoo" in out and "demo" in out


def test_zoo_list_shows_paths(capsys):
    from lmfuse import zoo

    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for name in zoo.names():
        assert str(zoo.path(name)) in out


def test_user_error_exits_2_with_message(capsys):
    assert main(["zoo", "eval", "/no/such/dir"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmfuse zoo: error: model not found at '/no/such/dir'")


def test_python_dash_m_runs():
    proc = subprocess.run([sys.executable, "-m", "lmfuse", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("lmfuse ")
