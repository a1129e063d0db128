"""Shared pytest fixtures and marks."""

import os
import shutil

import pytest
import torch

# The engine's CPU helper processes (r1lab/engine/workers.py) only where a test asks for them: the r1lab command
# would otherwise start them ("auto") in every in-process CLI test, a few seconds each
os.environ["R1LAB_WORKERS"] = "1"

# torch.compile's default backend (inductor) builds C++ kernels on a CPU: tests that use it need a compiler
needs_cxx = pytest.mark.skipif(not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")),
                               reason="inductor needs a C++ compiler on CPU (none found)")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls: one intra-op thread avoids thread-pool contention on small shared CI machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
