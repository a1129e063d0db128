"""Hostile programs against r1lab.rewards.sandbox, in every sandbox mode that works on this machine.

Each attack prints PWNED only if it achieved its goal; the test then fails. Some attacks can only be blocked by
a layer that a mode lacks (``needs``: any one of these features blocks it); those are skipped with the reason.
Features: fs = private filesystem view (bwrap), net = own network namespace (bwrap, unshare), pidns = own pid
namespace (bwrap, unshare), uid = a fresh uid per run (any mode when the caller is root).
All runs of all modes execute concurrently in a module fixture (threads), then each case asserts on its result.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from r1lab.rewards import sandbox
from r1lab.rewards.code import code_reward

TIMEOUT = 1.5
SECRET = "r1lab-fake-secret-3f9a"
REPO = Path(__file__).resolve().parents[1]
TOKEN = f"{os.getpid()}_{int(time.time() * 1000)}"
TARGET_DIRS = {"tmp": Path(tempfile.gettempdir()), "repo": REPO}  # host dirs that write attacks aim at
ABSTRACT = f"r1lab_test_{TOKEN}"


@dataclass(frozen=True)
class Attack:
    name: str
    source: str
    needs: tuple[str, ...] = ()  # blocked if the mode has ANY of these features; () = every mode must block it
    target: str | None = None  # success = this host file exists afterwards (TARGET in the source)


ATTACKS = [
    Attack("infinite_loop", "while True:\n    pass\nprint('PWNED')"),
    Attack("fork_bomb", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"),
    Attack("memory_hog", "x = bytearray(2 << 30)\nprint('PWNED')"),
    Attack("memory_creep", "a = []\nfor _ in range(400):\n    a.append(bytearray(10 << 20))\nprint('PWNED')"),
    Attack("huge_output", "import sys\nfor _ in range(10**6):\n    sys.stdout.write('x' * 65536)\nprint('PWNED')"),
    Attack("disk_fill", "with open('big', 'wb') as f:\n    for _ in range(200):\n        f.write(b'0' * (1 << 20))\n"
           "print('PWNED')"),
    Attack("net_tcp_loopback", "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=1)\n"
           "print('PWNED')", needs=("net",)),
    Attack("net_abstract_unix", "import socket\ns = socket.socket(socket.AF_UNIX)\ns.settimeout(1)\n"
           "s.connect('\\0' + 'ABSTRACT')\nprint('PWNED')", needs=("net",)),
    Attack("write_tmp", "open('TARGET', 'w').write('x')", needs=("fs",), target="tmp"),
    Attack("write_repo", "open('TARGET', 'w').write('x')", needs=("fs", "uid"), target="repo"),
    Attack("env_secret", "import os\nprint('PWNED' if 'SECRET' in str(os.environ) else 'clean')"),
    Attack("proc_environ", "import os\nfor p in os.listdir('/proc'):\n    try:\n"
           "        if b'SECRET' in open(f'/proc/{p}/environ', 'rb').read():\n            print('PWNED')\n"
           "    except OSError:\n        pass", needs=("pidns", "uid")),
    Attack("kill_getppid", "import os, signal\np = os.getppid()\nif p > 1:\n    os.kill(p, signal.SIGKILL)\n"
           "    print('PWNED')", needs=("pidns", "uid")),
    Attack("kill_trainer", "import os, signal\nos.kill(TRAINER_PID, signal.SIGKILL)\nprint('PWNED')",
           needs=("pidns", "uid")),
    Attack("kill_all", "import os, signal\nos.kill(-1, signal.SIGKILL)", needs=("pidns", "uid")),  # victim checked
    Attack("sleep_past_limit", "import time\ntime.sleep(30)\nprint('PWNED')"),
    Attack("daemon_outlives", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
           "        time.sleep(30)\n    os._exit(0)\nprint('started')", needs=("pidns", "uid")),
    Attack("deep_recursion", "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1) + 1\n"
           "f(0)\nprint('PWNED')"),
    Attack("read_shadow", "print('PWNED', open('/etc/shadow').read()[:4])", needs=("fs", "uid")),
    Attack("read_repo", "print('PWNED', open('REPO/pyproject.toml').read()[:4])", needs=("fs",)),
    Attack("many_files", "fs = []\ntry:\n    for _ in range(5000):\n        fs.append(open('/dev/null'))\n"
           "except OSError:\n    pass\nprint('PWNED' if len(fs) > 1000 else len(fs))"),
    Attack("ctypes_segfault", "import ctypes\nctypes.string_at(0)\nprint('PWNED')"),
    Attack("exec_shell", "import os\nos.execv('/bin/sh', ['sh', '-c', 'echo PWNED'])", needs=("fs",)),
    Attack("thread_bomb", "import threading, time\nn = 0\ntry:\n    for _ in range(5000):\n"
           "        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n        n += 1\n"
           "except RuntimeError:\n    pass\nprint('PWNED' if n > 1000 else n)"),
    Attack("ignore_signals", "import signal\nfor s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT):\n"
           "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass"),
    Attack("raise_rlimit", "import resource\ntry:\n    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n"
           "    x = bytearray(2 << 30)\n    print('PWNED')\nexcept (ValueError, OSError, MemoryError):\n"
           "    print('blocked')"),
    Attack("setuid_root", "import os\ntry:\n    os.setuid(0)\n    print('PWNED')\nexcept OSError:\n"
           "    print('blocked')"),
]
CONTROLS = {"net_tcp_loopback", "net_abstract_unix", "write_tmp", "read_repo", "exec_shell"}  # harmless if they win
assert len(ATTACKS) >= 20 and len({a.name for a in ATTACKS}) == len(ATTACKS)


def _features(mode: str) -> set[str]:
    feats = {"bwrap": {"fs", "net", "pidns"}, "unshare": {"net", "pidns"}, "rlimits": set()}[mode]
    return feats | ({"uid"} if os.geteuid() == 0 else set())


MODES = sandbox.available_modes()


def _skip_reason(attack: Attack, mode: str) -> str | None:
    if attack.needs and not (set(attack.needs) & _features(mode)):
        return f"{attack.name} is only blocked by {' or '.join(attack.needs)}, which mode {mode!r} lacks here"
    return None


def _survivors(runs) -> list[tuple[int, int, int]]:
    """(pid, uid, session) of live processes that still belong to any finished run (by private uid or session)."""
    uids = {r.uid for r in runs if r.uid is not None}
    sessions = {r.session for r in runs}
    return [(pid, uid, sid) for pid, uid, sid, state in sandbox._proc_table()
            if state != "Z" and (uid in uids or sid in sessions)]  # fmt: skip


def _ours_left() -> set[str]:
    tmp = Path(tempfile.gettempdir())
    return {p.name for p in tmp.iterdir() if p.name.startswith(("r1lab_run_", "r1lab_io_"))}


@pytest.fixture(scope="module")
def results():
    """Run every (mode, attack) pair concurrently; record result, elapsed time and leftover processes."""
    os.environ["R1LAB_FAKE_SECRET"] = SECRET  # must not reach the sandbox
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind("\0" + ABSTRACT)
    unix.listen(16)
    subs = {"PORT": str(tcp.getsockname()[1]), "ABSTRACT": ABSTRACT, "TRAINER_PID": str(os.getpid()),
            "SECRET": SECRET, "REPO": str(REPO)}  # fmt: skip
    before = _ours_left()
    # A host process that holds the secret in its environment: a target for /proc snooping and kill(-1).
    victim = subprocess.Popen(["sleep", "120"], env={**os.environ, "R1LAB_FAKE_SECRET": SECRET})

    def one(mode: str, attack: Attack):
        src = attack.source
        target = TARGET_DIRS[attack.target] / f"r1lab_pwned_{TOKEN}_{mode}" if attack.target else None
        for k, v in {**subs, "TARGET": str(target)}.items():
            src = src.replace(k, v)
        t0 = time.monotonic()
        res = sandbox.run_python(src, timeout=TIMEOUT, mode=mode)
        elapsed = time.monotonic() - t0
        left = sandbox.leftover_processes(res.uid, res.session)
        if target is not None and target.exists():
            target.unlink()
            res = dataclasses.replace(res, stdout=res.stdout + f"PWNED (wrote {target})")
        return res, elapsed, left

    jobs = [(m, a) for m in MODES for a in ATTACKS if _skip_reason(a, m) is None]
    # Controls: attacks a mode cannot block must really succeed there (else "blocked" proves nothing).
    jobs += [(m, a) for m in MODES for a in ATTACKS if _skip_reason(a, m) and a.name in CONTROLS]
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            futs = {(m, a.name): pool.submit(one, m, a) for m, a in jobs}
            out = {key: f.result() for key, f in futs.items()}
    finally:
        victim_alive = victim.poll() is None
        victim.kill()
        victim.wait()
        tcp.close()
        unix.close()
        del os.environ["R1LAB_FAKE_SECRET"]
    time.sleep(0.3)
    runs = [v[0] for v in out.values()]
    late = _survivors(runs)
    out["host"] = {"dirs": _ours_left() - before, "victim_alive": victim_alive, "late_survivors": late}
    return out


def test_default_mode_is_strongest_available():
    assert MODES, "no sandbox mode works"
    assert sandbox.sandbox_mode() == MODES[0]
    assert "rlimits" in MODES


@pytest.mark.parametrize("mode", sandbox.MODES)
@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_attack_is_contained(results, mode, attack):
    if mode not in MODES:
        pytest.skip(f"sandbox mode {mode!r} does not work on this machine")
    reason = _skip_reason(attack, mode)
    if reason:
        pytest.skip(reason)
    res, elapsed, left = results[(mode, attack.name)]
    assert "PWNED" not in res.stdout, f"{attack.name} succeeded in {mode}: {res.stdout[:200]!r}"
    assert res.wall_s < TIMEOUT + 1.0, f"{attack.name} ran {res.wall_s:.2f}s"
    assert elapsed < TIMEOUT + 3.0, f"{attack.name} took {elapsed:.2f}s including cleanup"
    assert left == [], f"{attack.name} left processes {left} behind in {mode}"
    assert len(res.stdout.encode()) <= 1 << 20
    assert res.mode == mode


def test_attack_specific_outcomes(results):
    """The mechanism that stopped each attack is the intended one (first available mode)."""
    mode = MODES[0]
    loop, _, _ = results[(mode, "infinite_loop")]
    assert loop.timed_out and loop.returncode < 0
    sleep, _, _ = results[(mode, "sleep_past_limit")]
    assert sleep.timed_out
    out, _, _ = results[(mode, "huge_output")]
    assert 0 < len(out.stdout) <= 1 << 20 and not out.ok  # truncated at the cap, killed by SIGXFSZ
    env, _, _ = results[(mode, "env_secret")]
    assert env.stdout.strip() == "clean"
    seg, _, _ = results[(mode, "ctypes_segfault")]
    assert seg.returncode != 0 and not seg.timed_out
    for name in ("raise_rlimit", "setuid_root"):
        assert results[(mode, name)][0].stdout.strip() == "blocked"
    assert "MemoryError" in results[(mode, "memory_hog")][0].stderr


def test_host_unharmed(results):
    host = results["host"]
    assert host["victim_alive"], "a sandboxed program killed a host process"
    assert host["dirs"] == set(), f"sandbox temp dirs not deleted: {host['dirs']}"
    assert host["late_survivors"] == [], "processes of finished runs still alive 0.3 s later"
    assert not list(REPO.glob("r1lab_pwned_*")) and not list(TARGET_DIRS["tmp"].glob(f"r1lab_pwned_{TOKEN}*"))


def test_unblockable_attacks_really_succeed_without_the_layer(results):
    """Positive controls: the attack programs work when the protecting layer is absent."""
    controls = [(m, a) for m in MODES for a in ATTACKS if _skip_reason(a, m) and a.name in CONTROLS]
    if not controls:
        pytest.skip("every mode here blocks every attack; nothing to control against")
    for m, a in controls:
        assert "PWNED" in results[(m, a.name)][0].stdout, f"control {a.name} in {m} did not succeed"


@pytest.mark.parametrize("mode", sandbox.MODES)
def test_daemons_never_survive(mode):
    """Repeat the fork-setsid-fork-exit attack: a /proc scan alone lost ~7% of these grandchildren to a race."""
    attack = next(a for a in ATTACKS if a.name == "daemon_outlives")
    if mode not in MODES or _skip_reason(attack, mode):
        pytest.skip(f"mode {mode!r} unavailable or cannot contain daemons here")
    with ThreadPoolExecutor(max_workers=6) as pool:
        runs = list(pool.map(lambda _: sandbox.run_python(attack.source, timeout=TIMEOUT, mode=mode), range(48)))
    time.sleep(0.3)
    assert all(r.stdout.strip() == "started" for r in runs)
    assert _survivors(runs) == []


def test_code_reward_of_attacks_is_zero():
    """Through the public reward path: hostile completions score 0 and do not stall."""
    t0 = time.monotonic()
    tests = [{"input": "", "output": "PWNED"}]
    for src in ("while True:\n    pass", "import os\nos.kill(-1, 9)\nprint('PWNED')"):
        if "kill" in src and not ({"pidns", "uid"} & _features(MODES[0])):
            continue
        assert code_reward(f"```python\n{src}\n```", tests, timeout=1.0) == 0.0
    assert time.monotonic() - t0 < 6.0


def test_every_attack_scores_zero_through_code_reward():
    """The must-show through the reward users call: each hostile program of the suite, as a model's completion with a
    test that its success would pass (it prints PWNED), gets reward 0 within the time limit, in the default mode."""
    mode = MODES[0]
    subs = {"PORT": "9", "ABSTRACT": f"{ABSTRACT}_reward", "TRAINER_PID": str(os.getpid()), "SECRET": SECRET,
            "REPO": str(REPO), "TARGET": str(Path(tempfile.gettempdir()) / f"r1lab_pwned_{TOKEN}_reward")}
    attacks = [a for a in ATTACKS if _skip_reason(a, mode) is None]
    tests = [{"input": "", "output": "PWNED"}]

    def reward(attack: Attack) -> tuple[str, float, float]:
        src = attack.source
        for k, v in subs.items():
            src = src.replace(k, v)
        t0 = time.monotonic()
        return attack.name, code_reward(f"```python\n{src}\n```", tests, timeout=TIMEOUT), time.monotonic() - t0

    with ThreadPoolExecutor(max_workers=6) as pool:
        scored = list(pool.map(reward, attacks))
    assert len(scored) >= 20
    assert [(name, r) for name, r, _ in scored if r != 0.0] == []
    assert max(dt for _, _, dt in scored) < TIMEOUT + 3.0
    assert not Path(subs["TARGET"]).exists()


def test_invalid_limits_raise():
    with pytest.raises(ValueError, match="timeout"):
        sandbox.run_python("print(1)", timeout=0)
    with pytest.raises(ValueError, match="mode"):
        sandbox.run_python("print(1)", mode="docker")


def test_mode_override_by_environment(monkeypatch, caplog):
    monkeypatch.setenv("R1LAB_SANDBOX", "rlimits")
    with caplog.at_level("WARNING", logger="r1lab.rewards.sandbox"):
        assert sandbox.sandbox_mode() == "rlimits"
        assert sandbox.run_python("print(1)", timeout=5).mode == "rlimits"
    if not sandbox._warned.is_set():  # the once-only warning flag
        pytest.fail("rlimits mode did not log its 'network not isolated' warning")
    monkeypatch.setenv("R1LAB_SANDBOX", "docker")
    with pytest.raises(ValueError, match="R1LAB_SANDBOX"):
        sandbox.sandbox_mode()
