"""llama.cpp's `llama-server`, the peer a user would run instead: found, or built once and cached.

llama.cpp publishes no Linux binaries on the package registries, and llama-cpp-python only its
source, which vendors llama.cpp. So the first use downloads that source with pip (a registry this
machine reaches), builds the `llama-server` target with CMake for this CPU (`GGML_NATIVE`; about
10 minutes on 2 cores, progress printed), and keeps the binary in
``$AGENTLM_HOME/cache/llama.cpp/<version>/``. Later uses find it there, or take `LLAMA_SERVER`
(a binary of your own) or one on PATH.

    .venv/bin/python benchmarks/llama_server.py     # build (or find) it and print its path
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from agentlm.paths import home

VERSION = "0.3.36"  # llama-cpp-python's release, whose vendored llama.cpp is built


def cached_binary() -> Path:
    return home() / "cache" / "llama.cpp" / VERSION / "llama-server"


def llama_server() -> Path:
    """A llama-server binary: $LLAMA_SERVER, the cached build, one on PATH, or a new build."""
    given = os.environ.get("LLAMA_SERVER")
    if given:
        return Path(given)
    if cached_binary().is_file():
        return cached_binary()
    on_path = shutil.which("llama-server")
    return Path(on_path) if on_path else build()


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    print(f"llama.cpp: {what}", flush=True)
    done = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"llama.cpp: {what} failed ({done.returncode}):\n{done.stdout[-3000:]}")


def build() -> Path:
    """Download llama-cpp-python's source, build its vendored llama-server, cache the binary."""
    for tool in ("cmake", "c++"):
        if not shutil.which(tool):
            raise RuntimeError(f"building llama.cpp needs {tool}: apt-get install cmake g++")
    target = cached_binary()
    with tempfile.TemporaryDirectory(prefix="agentlm-llama-cpp-") as tmp:
        work = Path(tmp)
        _run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={VERSION}", "-d", str(work)],
            f"downloading llama-cpp-python {VERSION}'s source",
        )  # fmt: skip
        (sdist,) = work.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*")) / "vendor" / "llama.cpp"
        build_dir = work / "build"
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        _run(
            ["cmake", "-S", str(source), "-B", str(build_dir), *generator, "-DCMAKE_BUILD_TYPE=Release",
             "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
             "-DBUILD_SHARED_LIBS=OFF"],
            "configuring",
        )  # fmt: skip
        jobs = str(os.cpu_count() or 2)
        _run(
            ["cmake", "--build", str(build_dir), "-j", jobs, "--target", "llama-server"],
            f"building llama-server ({jobs} jobs; about 10 minutes on 2 cores)",
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build_dir / "bin" / "llama-server", target)
    print(f"llama.cpp: llama-server cached at {target}", flush=True)
    return target


if __name__ == "__main__":
    print(llama_server())
