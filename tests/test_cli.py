"""The r1lab command: bad input ends in one clear line, not a traceback."""


def test_cli_bad_input_is_one_clear_line():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "r1lab", "info", "--model", "/no/such/dir"], capture_output=True,
                         text=True)
    assert out.returncode == 2
    assert "no such model directory" in out.stderr and "Traceback" not in out.stderr
