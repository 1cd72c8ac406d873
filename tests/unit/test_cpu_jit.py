"""MLX's CPU compiler given AVX2 and FMA (serving/cpu_jit.py): the wrapper it puts on PATH, when it
does not, and the promise that matters: every compiled kernel computes exactly the numbers it
computed without the flags (checked in two processes, one with the wrapper and one without)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving import cpu_jit
from serving.cpu_jit import ENV_MARK, FLAGS, plan

REPO = Path(__file__).resolve().parents[2]
X86_LINUX = sys.platform.startswith("linux") and os.uname().machine == "x86_64"


@pytest.fixture
def cpu_with_avx2(monkeypatch):
    monkeypatch.setattr(cpu_jit, "_cpu_has", lambda *f, **k: True)
    monkeypatch.setattr(cpu_jit.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu_jit.sys, "platform", "linux")


def _fake_gxx(tmp_path: Path) -> Path:
    bindir = tmp_path / "sysbin"
    bindir.mkdir()
    gxx = bindir / "g++"
    gxx.write_text("#!/bin/sh\necho \"$@\"\n")  # says what it was given
    gxx.chmod(0o755)
    return bindir


def test_the_wrapper_adds_the_flags_and_its_own_tmpdir(tmp_path, cpu_with_avx2):
    sysbin = _fake_gxx(tmp_path)
    setup, env = plan(tmp_path / "cache", environ={"PATH": str(sysbin)}, mlx_version="0.0")
    assert setup.flags == " ".join(FLAGS) and env[ENV_MARK] == setup.flags
    first = env["PATH"].split(os.pathsep)[0]
    assert env["PATH"].split(os.pathsep)[1:] == [str(sysbin)]
    assert Path(env["TMPDIR"]).is_dir() and Path(env["TMPDIR"]).parent == Path(first).parent
    out = subprocess.run(["g++", "-O3", "x.cpp"], env={"PATH": env["PATH"]}, capture_output=True, text=True)
    assert out.stdout.split() == ["-O3", "x.cpp", *FLAGS]  # MLX's arguments, then ours
    again = plan(tmp_path / "cache", environ={"PATH": str(sysbin)}, mlx_version="0.0")
    assert again == (setup, env)  # the same folder: kernels compiled once are reused
    other = plan(tmp_path / "cache", environ={"PATH": str(sysbin)}, mlx_version="9.9")[1]
    assert other["TMPDIR"] != env["TMPDIR"]  # another MLX compiles into another folder


@pytest.mark.parametrize("case, expect", [
    ("no-gxx", "no g++"),
    ("no-avx2", "lacks AVX2"),
    ("not-x86", "not Linux x86-64"),
])
def test_as_shipped_with_the_reason(tmp_path, monkeypatch, cpu_with_avx2, case, expect):
    path = str(_fake_gxx(tmp_path)) if case != "no-gxx" else str(tmp_path)
    if case == "no-avx2":
        monkeypatch.setattr(cpu_jit, "_cpu_has", lambda *f, **k: False)
    if case == "not-x86":
        monkeypatch.setattr(cpu_jit.platform, "machine", lambda: "aarch64")
    setup, env = plan(tmp_path / "cache", environ={"PATH": path}, mlx_version="0.0")
    assert setup.flags is None and expect in setup.note and env == {}
    assert setup.describe().startswith("as shipped")


def test_a_child_of_an_arranged_process_keeps_its_setup(tmp_path):
    setup, env = plan(tmp_path, environ={ENV_MARK: "-mavx2 -mfma -ffp-contract=off", "PATH": "/x"}, mlx_version="0")
    assert setup.flags == "-mavx2 -mfma -ffp-contract=off" and env == {}


def test_cpu_flags_are_read_from_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse2 avx2 fma bmi2\n")
    assert cpu_jit._cpu_has("avx2", "fma", cpuinfo=info) and not cpu_jit._cpu_has("avx512f", cpuinfo=info)
    assert not cpu_jit._cpu_has("avx2", cpuinfo=tmp_path / "missing")


PROBE = r"""
import hashlib, json, mlx.core as mx, mlx.nn as nn
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.activations import swiglu
from serving.engine.fused_decode import softmax_last_axis
from tests.unit.tiny_llama import tiny_llama
mx.random.seed(0)
digest = hashlib.sha256()
x, y = mx.random.normal((7, 3001)) * 6, mx.random.normal((7, 3001))
# The exp's edges (overflow, underflow, infinities, NaN), which its selects handle, and a tail
# that is not a whole vector: the vectorized loop must give these the scalar loop's numbers too.
edges = mx.array([100.0, -100.0, 88.5, -88.5, 88.0, -88.0, float("inf"), float("-inf"), float("nan"), 1e-30, -0.0])
x = mx.concatenate([x, mx.concatenate([edges, mx.zeros((3001 - edges.size,))])[None]], axis=0)
y = mx.concatenate([y, mx.ones((1, 3001))], axis=0)
for out in (swiglu(x, y), nn.silu(x), nn.gelu(x), softmax_last_axis(x)):
    digest.update(memoryview(out.astype(mx.float32)))
same_softmax = []
for length in (1, 7, 300, 2049):
    s = mx.random.normal((5, 3, length)) * 8
    same_softmax.append(bool(mx.array_equal(softmax_last_axis(s), mx.softmax(s, axis=-1, precise=True)).item()))
model = tiny_llama(seed=5)
g = BatchGenerator(model, stop_tokens=[], completion_batch_size=4, prefill_batch_size=2, prefill_step_size=8,
                   stream=mx.default_stream(mx.default_device()))
uids = g.insert([[5, 9, 13, 5, 9], [7] * 21, [1, 2, 3, 4]], max_tokens=[16] * 3)
tokens = {u: [] for u in uids}
while any(len(t) < 16 for t in tokens.values()):
    for r in g.next()[1]:
        tokens[r.uid].append(r.token)
        digest.update(memoryview(r.logprobs.astype(mx.float32)))
print(json.dumps({"digest": digest.hexdigest(), "tokens": [tokens[u] for u in uids], "softmax": same_softmax}))
"""


@pytest.mark.skipif(not X86_LINUX, reason="the flags are for Linux x86-64")
def test_the_flags_change_no_number(tmp_path):
    """Compiled SiLU, SwiGLU and GELU, the compiled softmax and a tiny llama's every log-probability,
    bit for bit, with MLX's CPU compiler as shipped and with the flags (each in its own JIT folder)."""
    import mlx.core as mx

    setup, flagged = plan(tmp_path / "cache", environ=dict(os.environ), mlx_version=mx.__version__)
    if setup.flags is None:
        pytest.skip(setup.note)
    runs = {}
    for name, extra in (("as shipped", {"TMPDIR": str(tmp_path / "plain-tmp")}), ("flagged", flagged)):
        (tmp_path / "plain-tmp").mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", ENV_MARK)} | extra
        done = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert runs["flagged"] == runs["as shipped"]
    assert all(runs["flagged"]["softmax"]), runs["flagged"]["softmax"]
    assert any(p.name.endswith(".so") for p in Path(flagged["TMPDIR"]).rglob("*")), "nothing was compiled"
