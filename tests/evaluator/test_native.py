"""C++/CUDA candidates (torch.utils.cpp_extension.load_inline): built in a cache directory keyed by the
candidate's content hash, with a compile time limit, and compile errors kept as data for a repair prompt.

nvcc and g++ are enough: a CUDA source is compiled even on a CPU-only build of torch, so a kernel that
does not compile gets ``compile_error`` with nvcc's own message there too."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from evoforge.cache import CACHE_ENV, clear_stale_locks, extension_build_dir, extensions_root
from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, Evaluator
from evoforge.evaluator.native import compiler_errors, compiler_log
from evoforge.evaluator.native import cuda_toolkit as _cuda_toolkit
from evoforge.task import task_from_file
from evoforge.timing import TimingConfig
from tests.conftest import FIXTURES, TASKS

NATIVE = FIXTURES / "native"
needs_cxx = pytest.mark.skipif(shutil.which("c++") is None or shutil.which("ninja") is None,
                               reason="needs a C++ compiler and ninja")
needs_nvcc = pytest.mark.skipif(_cuda_toolkit() is None, reason="needs a CUDA toolkit (nvcc)")


def _config(**kw: float) -> EvalConfig:
    return EvalConfig(device="cpu", timeout_s=300, n_random=1, edge_cases=False,
                      timing=TimingConfig(budget_ms=2, rounds=1, min_reps=2), **kw)


def _evaluate(name: str, config: EvalConfig | None = None) -> tuple[Candidate, object]:
    cand = Candidate(name=Path(name).stem, source=(NATIVE / name).read_text())
    assert cand.language == "cuda"
    return cand, Evaluator(task_from_file(TASKS / "tanh_matmul.py"), config or _config()).evaluate([cand]).results[0]


def test_build_dir_is_keyed_by_hash_under_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    path = extension_build_dir("0123abcd")
    assert path == tmp_path / "torch_extensions" / "0123abcd" and path.is_dir()
    assert extensions_root() == tmp_path / "torch_extensions"
    with pytest.raises(ValueError):
        extension_build_dir("../escape")


def test_stale_build_locks_are_cleared(tmp_path: Path) -> None:
    (tmp_path / "ext").mkdir()
    lock = tmp_path / "ext" / "lock"
    lock.write_text("")
    assert clear_stale_locks(tmp_path, older_than_s=3600) == []
    assert clear_stale_locks(tmp_path, older_than_s=-1) == [lock] and not lock.exists()


def test_compiler_log_puts_errors_first_and_truncates_the_middle() -> None:
    noise = "\n".join(f"[{i}/9] c++ -c file{i}.cpp -o file{i}.o" for i in range(2000))
    text = "Error building extension 'x': " + noise[:500] + "\nk.cu(8): error: expected a \";\"\n" + noise
    log = compiler_log(text, limit=4000)
    assert log.startswith("compiler output:\nError building extension")
    assert log.endswith("compiler errors:\nk.cu(8): error: expected a \";\"")  # last: a repair prompt reads the tail
    assert "characters cut" in log and len(log) < 5000
    assert compiler_errors("ninja: build stopped: subcommand failed.\nFAILED: a.o") == []


@pytest.mark.slow
@needs_nvcc
@needs_cxx
def test_a_cuda_kernel_that_does_not_compile_is_a_compile_error_with_nvccs_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    cand, result = _evaluate("cuda_compile_error.py")
    assert result.status == "compile_error"
    assert "building the C++/CUDA extension failed" in result.detail and 'error: expected a ";"' in result.detail
    assert "compiler output:" in result.logs
    tail = result.logs[-2000:]  # what the LLM's repair prompt is shown
    assert "compiler errors:" in tail and 'error: expected a ";"' in tail and "cuda.cu(" in tail
    assert (tmp_path / "torch_extensions" / cand.hash).is_dir()  # built where the cache says


@pytest.mark.slow
@needs_cxx
def test_a_second_evaluation_of_the_same_source_does_not_recompile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    cand, first = _evaluate("cpp_tanh_matmul.py")
    assert first.status == "ok", (first.detail, first.logs[-3000:])
    built = sorted((tmp_path / "torch_extensions" / cand.hash).rglob("*.so"))
    assert built, "no extension library in the candidate's build directory"
    stamps = {p: p.stat().st_mtime_ns for p in built}
    objects = {p: p.stat().st_mtime_ns for p in (tmp_path / "torch_extensions" / cand.hash).rglob("*.o")}
    started = time.monotonic()
    _, second = _evaluate("cpp_tanh_matmul.py")
    assert second.status == "ok", second.detail
    assert {p: p.stat().st_mtime_ns for p in built} == stamps
    assert {p: p.stat().st_mtime_ns for p in objects} == objects
    assert time.monotonic() - started < 60


@needs_cxx
def test_a_compile_past_its_time_limit_is_a_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    _, result = _evaluate("cpp_tanh_matmul.py", _config(compile_timeout_s=1.0))
    assert result.status == "timeout" and "compile stage ran past its 1 s limit" in result.detail


def test_the_sandbox_lets_workers_write_the_extension_cache(tmp_path: Path) -> None:
    from evoforge.evaluator import sandbox

    env = {"HOME": str(tmp_path / "home"), CACHE_ENV: str(tmp_path / "cache")}
    writable = sandbox.worker_writable(tmp_path / "work", env)
    assert tmp_path / "cache" / "torch_extensions" in writable  # the Landlock domain includes the build root
    assert extensions_root(env) == tmp_path / "cache" / "torch_extensions"
