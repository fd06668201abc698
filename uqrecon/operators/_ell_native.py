"""The native CPU kernel of the sliced-ELL product (``_ell_native.cc``): built on first
use, loaded through JAX's FFI, used by :mod:`uqrecon.operators._ell` on CPU for float32.

The kernel is compiled once per machine with the system's C++ compiler (``$CXX``, else
``c++`` / ``g++`` / ``clang++``) against the FFI headers that jaxlib ships
(``jax.ffi.include_dir()``), into ``$UQRECON_KERNEL_CACHE`` (default
``~/.cache/uqrecon/kernels``) under a name that hashes the source, the jaxlib version and
the compiler, so a changed source or jaxlib builds anew. Building takes ~2 s; later
processes load the library. Without a compiler, or if the build fails, :func:`available`
is False (:func:`unavailable_reason` says why) and the products use XLA's gathers, the
same numbers to float32 rounding at lower speed. ``UQRECON_NATIVE_KERNELS=0`` switches the
kernel off (benchmarks compare the two that way).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jax
import jaxlib

__all__ = ["TARGET", "available", "unavailable_reason", "enabled"]

TARGET = "uqrecon_ell_matmat_f32"
_SOURCE = Path(__file__).with_name("_ell_native.cc")
_LOCK = threading.Lock()
_STATE: dict = {}          # "ok": bool, "reason": str, "path": str


def enabled() -> bool:
    """Whether the native kernel may be used (``UQRECON_NATIVE_KERNELS`` is not ``0``)."""
    return os.environ.get("UQRECON_NATIVE_KERNELS", "1").strip().lower() not in (
        "0", "false", "no", "off")


def _compiler():
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cache_dir() -> Path:
    return Path(os.environ.get("UQRECON_KERNEL_CACHE",
                               Path.home() / ".cache" / "uqrecon" / "kernels"))


def _build() -> Path:
    """The compiled library's path (compiling it if this machine has not yet)."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set $CXX, or install g++ or clang++)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                             timeout=60).stdout.splitlines()[:1]
    digest = hashlib.sha256(b"\0".join([_SOURCE.read_bytes(), jaxlib.__version__.encode(),
                                        str(version).encode()])).hexdigest()[:16]
    try:
        folder = _cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="uqrecon-kernels-"))
    target = folder / f"ell_native-{digest}.so"
    if target.exists():
        return target
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)    # other processes may build too
    os.close(fd)
    cmd = [cxx, "-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-w",
           f"-I{jax.ffi.include_dir()}", str(_SOURCE), "-o", tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode:
        os.unlink(tmp)
        raise RuntimeError(f"building the native ELL kernel failed: {' '.join(cmd)}\n"
                           f"{proc.stderr[-2000:]}")
    os.replace(tmp, target)                                 # atomic: a reader sees all or none
    return target


def available() -> bool:
    """Whether the kernel is built, loaded and registered with JAX (tried once per
    process; False when switched off by ``UQRECON_NATIVE_KERNELS=0``)."""
    if not enabled():
        return False
    with _LOCK:
        if "ok" not in _STATE:
            try:
                path = _build()
                lib = ctypes.cdll.LoadLibrary(str(path))
                jax.ffi.register_ffi_target(
                    TARGET, jax.ffi.pycapsule(lib.uqrecon_ell_matmat_f32), platform="cpu")
                _STATE.update(ok=True, reason=None, path=str(path), lib=lib)
            except Exception as err:                        # any failure: XLA's gathers
                _STATE.update(ok=False, reason=f"{type(err).__name__}: {err}", path=None)
        return _STATE["ok"]


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None when it is True or was not asked yet)."""
    if not enabled():
        return "switched off by UQRECON_NATIVE_KERNELS=0"
    return _STATE.get("reason")
