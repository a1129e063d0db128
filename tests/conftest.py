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


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A small byte-level BPE (vocab 300) trained on arithmetic and word problems in the R1-Zero frame, with the
    template: what the SFT and GRPO tests train and sample with."""
    from r1lab.data.corpus import render
    from r1lab.data.templates import R1_ZERO_TEMPLATE
    from r1lab.data.tokenizer import train_tokenizer
    from r1lab.tasks import make_split

    ps = make_split("train", 30, families=["arithmetic", "word"])
    d = tmp_path_factory.mktemp("tok")
    train_tokenizer([render(p, "r1zero") for p in ps] + [R1_ZERO_TEMPLATE], 300, d)
    return str(d)
