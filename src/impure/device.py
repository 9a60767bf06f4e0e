"""Device and precision selection: run on GPU or CPU without thinking about it."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

__all__ = ["cpu_features", "select_device", "select_dtype", "tune_cpu_allocator"]

_DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


# /proc/cpuinfo flags that decide how fast bfloat16 runs on the CPU.
_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2")


def cpu_features() -> dict[str, object]:
    """What this machine's CPU offers PyTorch, for run records and speed reports: the kernel capability torch
    dispatches to ("AVX2", "AVX512", ...), the bfloat16-related flags the CPU reports (Linux; empty elsewhere),
    whether it has native bfloat16 arithmetic, the model name, and torch's intra-op thread count.

    The speed of bfloat16 autocast on a CPU depends on these flags (AMX or AVX-512 BF16); a speed figure is
    only comparable with another measured on the same features.
    """
    flags: set[str] = set()
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "flags" and not flags:
                    flags = set(value.split())
                elif key.strip() == "model name" and not model:
                    model = value.strip()
    except OSError:  # not Linux
        pass
    present = [flag for flag in _BF16_FLAGS if flag in flags]
    return {"capability": torch.backends.cpu.get_cpu_capability(), "flags": present,
            "native_bf16": "avx512_bf16" in flags or "amx_bf16" in flags, "model": model,
            "threads": torch.get_num_threads()}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve a device request: "auto" picks CUDA, then Apple MPS, then the CPU.

    Args:
        device: "auto", "cuda", "cuda:1", "mps", "cpu" or a `torch.device`.

    Raises:
        ValueError: the name is unknown or the requested accelerator is not available.
    """
    if isinstance(device, torch.device):
        name = device.type
    elif isinstance(device, str):
        name = device.split(":")[0]
    else:
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    if name not in _DEVICE_CHOICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(_DEVICE_CHOICES)} (or 'cuda:N')")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but CUDA is not available; choose 'auto' or 'cpu' "
                         "(--device auto / --device cpu on the command line)")
    if name == "mps" and not _mps_available():
        raise ValueError(f"device {str(device)!r} was requested but Apple MPS is not available; choose 'auto' or "
                         "'cpu' (--device auto / --device cpu on the command line)")
    return torch.device(device)


def select_dtype(precision: str, device: torch.device, *, training: bool = False) -> torch.dtype:
    """The dtype for `precision` ("fp32", "fp16", "bf16", "auto") on `device`: of the weights for inference,
    of autocast for training (`training=True`).

    "auto" is bfloat16 on GPUs that support it, else float16; float16 on MPS for inference (float32 for
    training); float32 on the CPU, where bfloat16 is only fast with native bf16 arithmetic (see
    docs/api.md). fp16 is refused on the CPU, and for training anywhere but CUDA (its gradient scaler).
    """
    choices = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" and not training else torch.float32
    if precision not in choices:
        raise ValueError(f"unknown precision {precision!r}; choose auto, fp32, fp16 or bf16")
    dtype = choices[precision]
    if dtype == torch.float16 and (device.type == "cpu" or (training and device.type != "cuda")):
        where = "training" if training else "inference"
        raise ValueError(f"precision 'fp16' for {where} is not supported on {device.type}; use 'bf16' or 'fp32'")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bfloat16; use 'fp16'")
    return dtype


# glibc mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_allocator_tuned = False


def tune_cpu_allocator() -> bool:
    """Keep freed CPU memory in the process heap instead of returning it to the operating system.

    glibc serves every allocation above 32 MiB with a fresh `mmap`, so each large activation tensor of a
    forward or backward pass is page-faulted and zeroed anew: on a 2-core CPU that made the purifier's
    elementwise operations several times slower than their arithmetic (`benchmarks/README.md`). After
    this call, large blocks come from the heap and are reused; the price is that the process keeps its
    peak memory until it exits. `impure`'s command line and `Trainer.fit` call it; call it yourself at
    the start of a long CPU job. Returns whether it took effect (glibc on Linux only); calling it again
    does nothing.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    _allocator_tuned = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _allocator_tuned
