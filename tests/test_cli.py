"""The r1lab command: bad input ends in one clear line, not a traceback."""


def test_cli_bad_input_is_one_clear_line():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "r1lab", "info", "--model", "/no/such/dir"], capture_output=True,
                         text=True)
    assert out.returncode == 2
    assert "no such model directory" in out.stderr and "Traceback" not in out.stderr


def test_output_directory_that_is_a_file_is_one_clear_line(tmp_path, capsys):
    from r1lab.cli import main

    blocker = tmp_path / "out"
    blocker.write_text("not a directory")
    code = main(["pretrain", "--preset", "tiny", "--out-dir", str(blocker), "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(blocker) in err and "Traceback" not in err
