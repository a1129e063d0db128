"""The allocator setting every ``r1lab`` command applies (r1lab/allocator.py)."""

import sys

import pytest

from r1lab.allocator import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_applies_on_glibc_and_can_be_switched_off(monkeypatch):
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert keep_freed_memory() is True  # mallopt accepted both thresholds
    monkeypatch.setenv("R1LAB_MALLOC_DEFAULTS", "1")
    assert keep_freed_memory() is False


def test_cli_applies_it_before_running_a_command(monkeypatch, capsys):
    import r1lab.allocator
    from r1lab import cli

    calls = []
    monkeypatch.setattr(r1lab.allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["info", "--preset", "tiny"]) == 0
    assert calls == [1] and "total parameters" in capsys.readouterr().out
