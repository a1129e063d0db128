"""Run untrusted Python programs (model-written code) for execution-based rewards.

Idea: the R1 paper's code rewards come from "a compiler and test cases" (DeepSeek-R1 §2.2.2); peers run the
programs in microVMs (open-r1: E2B/Morph), containers (Piston) or cgroups + network namespace + chroot
(verl SandboxFusion). This module is a local, dependency-light equivalent with three layers, chosen at
runtime by a cached probe (``sandbox_mode()``):

* ``"bwrap"``   bubblewrap (Debian package ``bubblewrap``): new user/pid/net/ipc/uts/cgroup namespaces
  (``--unshare-all``), an empty root with read-only binds of only the interpreter and ``/usr/lib*`` (so no
  ``/bin/sh``, no ``/etc``, no repository), size-limited tmpfs for ``/tmp`` and the working dir, and
  ``--die-with-parent`` so the whole namespace dies with it.
* ``"unshare"`` util-linux ``unshare --user --net --pid --mount-proc``: no network, own pid namespace (nothing
  survives), but the host filesystem is visible (read-only for what the uid cannot write).
* ``"rlimits"`` resource limits only; network is NOT isolated (a warning is logged once).

Every mode additionally applies: rlimits (CPU seconds, address space, processes, file size = output cap, open
files, no core dumps), a new session / process group (``start_new_session``), a wall-clock timeout that kills the
process group, a clean environment (no inherited variables or secrets), ``python -I -S -B`` isolation and a
fresh temporary directory that is deleted afterwards. When the caller is root, each run also switches to a fresh,
otherwise unused uid (61000-64999): the program cannot read root-only files or signal the trainer, RLIMIT_NPROC
counts only this run's processes, and leftovers (daemons that called ``setsid``) are found and killed by uid.

Deliberate limits (documented, tested): not a VM - kernel exploits are out of scope. In ``"unshare"`` and
``"rlimits"`` modes the host filesystem is visible (world-readable files can be read, world-writable directories
such as ``/tmp`` written, ``/bin/sh`` executed). In ``"rlimits"`` mode a NON-root caller gets no uid separation:
a hostile program may signal or read the caller's processes, and a daemon that calls ``setsid`` escapes cleanup
(that mode is a last resort, like verl's "not a security sandbox" local fallback). Set the environment
variable ``R1LAB_SANDBOX`` to ``bwrap``/``unshare``/``rlimits`` to force a mode (error if unavailable).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

MODES = ("bwrap", "unshare", "rlimits")
_UID_RANGE = (61000, 65000)  # fresh uids for root callers; inside the 0-65535 range every container maps
_SANDBOX_CWD = "/work"  # working directory inside bubblewrap

# Runs as the first process of every sandbox: apply rlimits, drop to the run's uid, exec the real command.
_LAUNCHER = """
import json, os, resource, sys
cfg = json.loads(sys.argv[1])
for name, (soft, hard) in cfg["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (soft, hard))
if cfg["uid"] is not None:
    os.setgroups([])
    os.setgid(cfg["uid"])
    os.setuid(cfg["uid"])
os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
"""


@dataclass(frozen=True)
class RunResult:
    """Outcome of one sandboxed run. ``returncode`` < 0 means killed by that signal number."""

    stdout: str
    stderr: str
    returncode: int
    timed_out: bool
    wall_s: float
    mode: str
    uid: int | None  # the run's private uid (root callers only)
    session: int  # session / process-group id of the run (its first process)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


# ----------------------------------------------------------------------------- interpreter and probes


def _world_executable(path: str) -> bool:
    """True if every directory on the way to ``path`` is world-searchable and the file world-executable."""
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    for i in range(2, len(parts)):
        if not os.stat(os.sep.join(parts[:i]) or os.sep).st_mode & 0o001:
            return False
    return bool(os.stat(real).st_mode & 0o005 == 0o005)


@functools.cache
def _interpreter() -> str:
    """A Python 3 interpreter an unprivileged uid can execute (the trainer's own if possible)."""
    candidates = [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3") or ""]
    for cand in candidates:
        if cand and os.path.exists(cand) and (os.geteuid() != 0 or _world_executable(cand)):
            return os.path.realpath(cand)
    raise RuntimeError(f"no world-executable python3 for the sandbox among {candidates}")


def _bwrap_binds(interp: str) -> list[str]:
    """Read-only view for bubblewrap: the interpreter, its prefix, shared libraries; nothing else."""
    args: list[str] = []
    prefix = os.path.dirname(os.path.dirname(interp))
    for d in ("/usr/lib", "/usr/lib64", "/usr/lib32"):
        if os.path.isdir(d):
            args += ["--ro-bind", d, d]
    if prefix != "/usr":
        args += ["--ro-bind", prefix, prefix]
    else:
        args += ["--ro-bind", interp, interp]
    for d in ("/lib", "/lib64", "/lib32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


def _command(mode: str, interp: str, prog: str, tmpfs_bytes: int) -> list[str]:
    """The argv (after the launcher) that runs ``prog`` in ``mode``; cwd handling differs per mode."""
    py = [interp, "-I", "-S", "-B", "-X", "utf8"]
    if mode == "bwrap":
        return [
            shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", *_bwrap_binds(interp), "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", "/tmp",
            "--size", str(tmpfs_bytes), "--tmpfs", _SANDBOX_CWD,
            "--ro-bind", prog, f"{_SANDBOX_CWD}/prog.py", "--chdir", _SANDBOX_CWD,
            "--", *py, "prog.py",
        ]  # fmt: skip
    if mode == "unshare":
        return [
            shutil.which("unshare") or "unshare", "--user", "--map-current-user", "--net", "--pid", "--fork",
            "--kill-child", "--mount", "--mount-proc", "--", *py, prog,
        ]  # fmt: skip
    if mode == "rlimits":
        return [*py, prog]
    raise ValueError(f"sandbox mode must be one of {MODES}, got {mode!r}")


@functools.cache
def _probe(mode: str) -> bool:
    """Cached check that ``mode`` can run a trivial program on this machine."""
    if mode == "bwrap" and not shutil.which("bwrap"):
        return False
    if mode == "unshare" and not shutil.which("unshare"):
        return False
    try:
        res = _run("print(6 * 7)", "", mode, timeout=10.0, memory_mb=512, max_procs=64,
                   max_output_bytes=1 << 16, max_open_files=64)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - any failure means "mode unavailable"
        logger.debug("sandbox probe %s failed: %r", mode, exc)
        return False
    if res.stdout.strip() != "42":
        logger.debug("sandbox probe %s failed: rc=%s stderr=%s", mode, res.returncode, res.stderr[-500:])
    return res.stdout.strip() == "42"


def available_modes() -> list[str]:
    """Sandbox modes that work here, strongest first (each probed once per process)."""
    return [m for m in MODES if _probe(m)]


_warned = threading.Event()


def sandbox_mode() -> str:
    """The mode used by default: ``$R1LAB_SANDBOX`` if set, else the strongest available one."""
    forced = os.environ.get("R1LAB_SANDBOX", "").strip()
    if forced:
        if forced not in MODES:
            raise ValueError(f"R1LAB_SANDBOX must be one of {MODES}, got {forced!r}")
        if not _probe(forced):
            raise RuntimeError(f"R1LAB_SANDBOX={forced} but that sandbox mode does not work on this machine")
        mode = forced
    else:
        mode = next((m for m in MODES if _probe(m)), "")
        if not mode:
            raise RuntimeError("no sandbox mode works here (even plain rlimits failed); see debug log")
    if mode == "rlimits" and not _warned.is_set():
        _warned.set()
        logger.warning("code sandbox: rlimits only - network and filesystem are NOT isolated "
                       "(install bubblewrap: apt-get install -y bubblewrap)")  # fmt: skip
    return mode


# ----------------------------------------------------------------------------- process bookkeeping

_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def _proc_table() -> list[tuple[int, int, int, str]]:
    """(pid, real uid, session id, state) of every process, read from /proc."""
    rows = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{name}/status", "rb") as f:
                uid_line = next(line for line in f if line.startswith(b"Uid:"))
        except (OSError, StopIteration, IndexError):
            continue  # the process went away while we looked
        rows.append((int(name), int(uid_line.split()[1]), int(fields[3]), fields[0].decode()))
    return rows


def leftover_processes(uid: int | None, session: int) -> list[int]:
    """Live (non-zombie) processes that belong to a finished run: its uid (if any) or its session."""
    return [
        pid for pid, puid, sid, state in _proc_table()
        if state != "Z" and ((uid is not None and puid == uid) or sid == session)
    ]  # fmt: skip


def _allocate_uid() -> int | None:
    """A uid no process uses (root callers only); ``None`` when we cannot switch uid."""
    if os.geteuid() != 0:
        return None
    busy = {puid for _, puid, _, _ in _proc_table()}
    with _uid_lock:
        lo, hi = _UID_RANGE
        start = random.randrange(lo, hi)
        for k in range(hi - lo):
            uid = lo + (start - lo + k) % (hi - lo)
            if uid not in busy and uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid
    raise RuntimeError("no free sandbox uid (too many concurrent sandboxes)")


def _kill_uid(uid: int) -> None:
    """``kill(-1, SIGKILL)`` run AS ``uid``: the kernel signals every process of that uid in one pass under the
    task-list lock, so a process that forks and exits while /proc is being scanned cannot slip through."""
    code = "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass"
    subprocess.run([_interpreter(), "-I", "-S", "-c", code], user=uid, group=uid, extra_groups=[], env={},
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=30, check=False)  # fmt: skip


def _kill_leftovers(uid: int | None, session: int, grace_s: float = 2.0) -> None:
    """SIGKILL everything that belongs to the run until nothing is left (or the grace time is over).

    With a private uid, one atomic ``kill(-1)`` as that uid comes first; a /proc scan alone can miss a process
    forked by a parent that exits between listing /proc and reading the parent's state (seen in testing).
    Without a uid (non-root ``rlimits`` mode) only the scan by session is possible.
    """
    if uid is not None:
        _kill_uid(uid)
    deadline = time.monotonic() + grace_s
    while True:
        pids = leftover_processes(uid, session)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if time.monotonic() > deadline:
            logger.warning("sandbox: processes %s survived cleanup", pids)
            return
        time.sleep(0.01)
        if uid is not None:
            _kill_uid(uid)


def _rmtree(path: str) -> None:
    """Delete a directory even if the program chmod-ed things inside it."""

    def fix(func, p, _exc):  # shutil onerror callback
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def _read_capped(path: str, cap: int) -> str:
    with open(path, "rb") as f:
        return f.read(cap).decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------- running


def _run(
    source: str, stdin: str, mode: str, *, timeout: float, memory_mb: int, max_procs: int,
    max_output_bytes: int, max_open_files: int,
) -> RunResult:  # fmt: skip
    interp = _interpreter()
    uid = _allocate_uid()
    io_dir = tempfile.mkdtemp(prefix="r1lab_io_")  # ours only (0700): program text, stdin, outputs
    work_dir = tempfile.mkdtemp(prefix="r1lab_run_")  # the program's cwd in unshare/rlimits modes
    try:
        prog = os.path.join(io_dir if mode == "bwrap" else work_dir, "prog.py")
        with open(prog, "w", encoding="utf-8") as f:
            f.write(source)
        with open(os.path.join(io_dir, "stdin"), "w", encoding="utf-8") as f:
            f.write(stdin)
        if uid is not None:
            os.chmod(io_dir, 0o711)  # bwrap (running as uid) must reach prog.py to bind it; names stay hidden
            os.chmod(prog, 0o644)
            os.chown(work_dir, uid, uid)
        cpu_s = max(1, math.ceil(timeout))
        rlimits = {
            "RLIMIT_CPU": (cpu_s, cpu_s + 1),
            "RLIMIT_AS": (memory_mb << 20, memory_mb << 20),
            "RLIMIT_NPROC": (max_procs, max_procs),
            "RLIMIT_FSIZE": (max_output_bytes, max_output_bytes),
            "RLIMIT_NOFILE": (max_open_files, max_open_files),
            "RLIMIT_CORE": (0, 0),
        }
        home = _SANDBOX_CWD if mode == "bwrap" else work_dir
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home}
        argv = _command(mode, interp, prog, tmpfs_bytes=max(max_output_bytes, 16 << 20))
        cfg = json.dumps({"rlimits": rlimits, "uid": uid, "argv": argv, "env": env})
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, cfg]
        out_path, err_path = os.path.join(io_dir, "stdout"), os.path.join(io_dir, "stderr")
        t0 = time.monotonic()
        with open(os.path.join(io_dir, "stdin"), "rb") as fin, open(out_path, "wb") as fout, \
                open(err_path, "wb") as ferr:  # fmt: skip
            proc = subprocess.Popen(
                launcher, stdin=fin, stdout=fout, stderr=ferr, cwd=work_dir, env=env,
                start_new_session=True, close_fds=True,
            )  # fmt: skip
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group: launcher/bwrap/unshare and children
        except (ProcessLookupError, PermissionError):
            pass
        returncode = proc.wait()
        wall = time.monotonic() - t0
        _kill_leftovers(uid, proc.pid)
        return RunResult(
            stdout=_read_capped(out_path, max_output_bytes), stderr=_read_capped(err_path, max_output_bytes),
            returncode=returncode, timed_out=timed_out, wall_s=wall, mode=mode, uid=uid, session=proc.pid,
        )  # fmt: skip
    finally:
        _rmtree(work_dir)
        _rmtree(io_dir)
        if uid is not None:
            with _uid_lock:
                _uids_in_use.discard(uid)


def run_python(
    source: str,
    stdin: str = "",
    *,
    timeout: float = 5.0,
    memory_mb: int = 512,
    max_procs: int = 32,
    max_output_bytes: int = 1 << 20,
    max_open_files: int = 64,
    mode: str | None = None,
) -> RunResult:
    """Run ``source`` as a Python program in the sandbox, feeding ``stdin``; never raises for program faults.

    ``max_output_bytes`` caps stdout/stderr and every file the program writes (RLIMIT_FSIZE: a program that
    writes more is killed by SIGXFSZ). ``max_procs`` counts threads too. Thread-safe.

    >>> r = run_python("print(int(input()) * 2)", "21\\n", timeout=10)
    >>> (r.stdout, r.returncode, r.timed_out)
    ('42\\n', 0, False)
    """
    if timeout <= 0 or memory_mb <= 0 or max_procs <= 0 or max_output_bytes <= 0 or max_open_files <= 3:
        raise ValueError(
            f"sandbox limits must be positive (timeout={timeout}, memory_mb={memory_mb}, max_procs={max_procs}, "
            f"max_output_bytes={max_output_bytes}, max_open_files={max_open_files} > 3)"
        )
    mode = mode or sandbox_mode()
    if mode not in MODES:
        raise ValueError(f"sandbox mode must be one of {MODES}, got {mode!r}")
    return _run(source, stdin, mode, timeout=timeout, memory_mb=memory_mb, max_procs=max_procs,
                max_output_bytes=max_output_bytes, max_open_files=max_open_files)  # fmt: skip
