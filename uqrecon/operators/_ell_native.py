"""The native CPU kernel of the sliced-ELL product (``_ell_native.cc``): built on first
use, loaded through JAX's FFI, used by :mod:`uqrecon.operators._ell` on CPU for float32.

The kernel is compiled once per machine with the system's C++ compiler (``$CXX``, else
``c++`` / ``g++`` / ``clang++``) against the FFI headers that jaxlib ships
(``jax.ffi.include_dir()``), into ``$UQRECON_KERNEL_CACHE`` (default
``~/.cache/uqrecon/kernels``) under a name that hashes the source, the jaxlib version and
the compiler, its command and the machine, so a changed source or jaxlib builds anew
(where that folder cannot be written, a per-user folder of the temporary directory
serves). Building takes ~2 s; later processes load the library (a cached file that does
not load is rebuilt). Without a compiler, or if the build fails, :func:`available`
is False (:func:`unavailable_reason` says why) and the products use XLA's gathers, the
same numbers to float32 rounding at lower speed. ``UQRECON_NATIVE_KERNELS=0`` switches the
kernel off (benchmarks compare the two that way).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
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
    folder = os.environ.get("UQRECON_KERNEL_CACHE")
    return Path(folder) if folder else Path.home() / ".cache" / "uqrecon" / "kernels"


def _fallback_dir() -> Path:
    """A per-user folder of the system's temporary directory (one per machine, not per
    process: later processes reuse what an earlier one built)."""
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"uqrecon-kernels-{uid}"


def _command(cxx: str, out: str) -> list[str]:
    return [cxx, "-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-w",
            f"-I{jax.ffi.include_dir()}", str(_SOURCE), "-o", out]


def _compile(cxx: str, folder: Path, target: Path) -> None:
    """Compile into a temporary file of ``folder`` and move it to ``target`` (atomic:
    another process building the same library at the same time is harmless)."""
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        cmd = _command(cxx, tmp)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode:
            raise RuntimeError(f"building the native ELL kernel failed: {' '.join(cmd)}\n"
                               f"{proc.stderr[-2000:]}")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o755 & ~umask)       # mkstemp makes it 0600: others could not load it
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path):
    lib = ctypes.cdll.LoadLibrary(str(path))
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.uqrecon_ell_matmat_f32),
                                platform="cpu")
    return lib


def _build_and_load():
    """``(path, library)``: the compiled kernel loaded and registered, compiled first if
    this machine has not yet; a cached file that does not load (another architecture, a
    broken file) is rebuilt, and an unwritable folder gives way to :func:`_fallback_dir`."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set $CXX, or install g++ or clang++)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                             timeout=60).stdout.splitlines()[:1]
    key = b"\0".join([_SOURCE.read_bytes(), jaxlib.__version__.encode(), str(version).encode(),
                      " ".join(_command(cxx, "")).encode(), platform.machine().encode()])
    name = f"ell_native-{hashlib.sha256(key).hexdigest()[:16]}.so"
    errors = []
    for folder in (_cache_dir(), _fallback_dir()):
        target = folder / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if target.exists():
                try:
                    return target, _load(target)
                except OSError as err:                   # rebuilt below
                    errors.append(f"{target}: {err}")
            _compile(cxx, folder, target)
            return target, _load(target)
        except OSError as err:                           # e.g. unwritable: the next folder
            errors.append(f"{folder}: {err}")
    raise RuntimeError("; ".join(errors))


def available() -> bool:
    """Whether the kernel is built, loaded and registered with JAX (tried once per
    process; False when switched off by ``UQRECON_NATIVE_KERNELS=0``)."""
    if not enabled():
        return False
    with _LOCK:
        if "ok" not in _STATE:
            try:
                path, lib = _build_and_load()
                _STATE.update(ok=True, reason=None, path=str(path), lib=lib)
            except Exception as err:                        # any failure: XLA's gathers
                _STATE.update(ok=False, reason=f"{type(err).__name__}: {err}", path=None)
        return _STATE["ok"]


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None when it is True or was not asked yet)."""
    if not enabled():
        return "switched off by UQRECON_NATIVE_KERNELS=0"
    return _STATE.get("reason")
