"""The hardware side of training: which device and precision to use, and the autocast and GradScaler for it.

`dtype='auto'` picks, in this order:
  bf16 autocast on CUDA GPUs with native bf16 (compute capability >= 8.0: A100, L4, H100 ...);
  fp16 autocast with a GradScaler on older GPUs (T4, V100): they report bf16 as "supported" but emulate it,
    slowly, and fp16's narrow range needs the scaler to keep small gradients from flushing to zero;
  bf16 autocast on CPUs with bf16 instructions (AVX512-BF16 or AMX), else fp32.
Weights and optimizer state stay fp32 in every case; autocast only runs the matmuls in the lower precision.
"""

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
import time

import torch

from errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str) -> str:
    """'auto' -> 'cuda' if there is a GPU, else 'cpu'; anything else is checked and returned."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as e:
        raise UserError(f"device={device!r} is not a torch device: use auto, cpu, cuda or cuda:N") from e
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={device} but torch sees no CUDA GPU: use --device=cpu (or auto)")
    return device


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> set[str]:
    """The bf16 instructions this CPU has (AVX512-BF16, AMX, Arm's BF16); empty if none."""
    return cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pick_dtype(device: str, dtype: str) -> tuple[str, str]:
    """The training dtype for `device` and why: (name, reason). 'auto' chooses as the module docstring says."""
    kind = torch.device(device).type
    if dtype != "auto":
        if dtype not in DTYPES:
            raise UserError(f"dtype={dtype!r}: use auto, {', '.join(DTYPES)}")
        return dtype, "set by dtype"
    if kind == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return "bfloat16", f"GPU compute capability {major}.{minor} has native bf16"
        return "float16", f"GPU compute capability {major}.{minor} emulates bf16; fp16 with a GradScaler instead"
    if kind == "cpu":
        native = cpu_has_native_bf16()
        if native:
            return "bfloat16", f"CPU has bf16 instructions ({', '.join(sorted(native))})"
        return "float32", "CPU has no bf16 instructions"
    return "float32", f"no mixed precision chosen for {kind}"


def autocast(device: str, dtype: str):
    """The context to run forward passes in: autocast to dtype, or nothing for fp32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[dtype])


def grad_scaler(device: str, dtype: str) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=dtype == "float16")


def keep_freed_memory_on_cpu() -> None:
    """Stop glibc from handing large freed blocks back to the kernel after every training step.

    By default each tensor over 32 MiB (the logits, their gradients) is a fresh mmap, and every one of its
    pages is faulted in and zeroed again on first touch: on a small VM that is a large share of a CPU step.
    With mmap off and trimming off, freed blocks stay in the heap and are reused. Linux/glibc only; a no-op
    elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return
    libc = ctypes.CDLL(libc_name)
    if not hasattr(libc, "mallopt"):
        return
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1)


def set_cpu_threads(local_world_size: int) -> None:
    """Share the cores between the processes of a CPU run (torchrun starts one per rank)."""
    torch.set_num_threads(max(1, cpu_cores() // local_world_size))


@contextlib.contextmanager
def explain_out_of_memory(batch_size: int, block_size: int, advice: str = ""):
    """Turn an out-of-memory error into one line that says what to change (advice: memory.py's plan for it)."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as e:
        text = str(e)
        if not (isinstance(e, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text):
            raise
        raise UserError(f"out of memory with batch_size={batch_size} at block_size={block_size}: use a smaller "
                        "--batch_size (raise --gradient_accumulation_steps to keep the tokens per iteration) "
                        "or --gradient_checkpointing=True" + (f". {advice}" if advice else "")) from e


def compile_pays_off(device: str) -> tuple[bool, str]:
    """Whether train.py compiles the model on `device`, and why: (yes or no, reason).

    GPUs: yes. CPUs: yes where inductor can build its C++ kernels (a compiler, torch's headers, OpenMP). It
    fuses the elementwise work between the matmuls (GELU, LayerNorm, residual adds, casts, dropout), which on
    a CPU is a large share of a step; the cost is compiling up front (figures in README.md, Benchmark).
    Other devices (mps): not measured, so no.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return True, "on a GPU"
    if kind != "cpu":
        return False, f"not measured on {kind}"
    problem = inductor_cpu_problem()
    if problem:
        return False, f"inductor cannot build CPU kernels here ({problem}); install a C++ compiler (g++ or clang)"
    return True, "on CPU, inductor builds C++ kernels"


@functools.cache
def inductor_cpu_problem() -> str | None:
    """None if torch.compile works on this CPU, else the first line of its error. It compiles a one-line
    function to find out (a few seconds, cached by inductor): a compiler alone is not enough, inductor
    also needs torch's headers and OpenMP."""
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(4))
    except Exception as e:  # whatever the cause (no compiler, missing headers, ...), train eager instead
        return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return None


# ---- device peaks for MFU -----------------------------------------------------------------------------

# Dense tensor-core peaks in FLOP/s from the vendors' data sheets, by device name and dtype. fp32 on
# A100/H100 is TF32. Matched by substring of torch.cuda.get_device_name(), most specific first.
GPU_PEAK_FLOPS = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 495e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "fp32": 378e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 495e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12},
    "L40S": {"bf16": 362e12, "fp16": 362e12, "fp32": 91.6e12},
    "A10G": {"bf16": 70e12, "fp16": 70e12, "fp32": 35e12},
    "A10": {"bf16": 125e12, "fp16": 125e12, "fp32": 31.2e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "fp32": 30.3e12},
    "RTX 4090": {"bf16": 165e12, "fp16": 165e12, "fp32": 82.6e12},
    "RTX 3090": {"bf16": 71e12, "fp16": 71e12, "fp32": 35.6e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},
    "T4": {"fp16": 65e12, "fp32": 8.1e12},
}
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def device_peak_flops(device: str | torch.device, dtype: torch.dtype) -> float | None:
    """The data-sheet peak of this CUDA device for dtype, or None (CPU, unknown GPU: measure it instead)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in GPU_PEAK_FLOPS.items():
        if key in name:
            return peaks.get(DTYPE_NAMES.get(dtype, "fp32"))
    return None


def measure_peak_flops(device: str | torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 10,
                       min_seconds: float = 0.5) -> float:
    """Achievable matmul FLOP/s on this device and dtype: the best of many n x n x n products.
    The honest denominator for MFU where no data-sheet peak applies (a CPU). It keeps multiplying for at
    least min_seconds, so a moment of contention (another process, a CPU clocking up) cannot set the peak."""
    device = torch.device(device)
    gen = torch.Generator(device).manual_seed(0)  # its own: measuring never moves the training RNG (dropout)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    best = float("inf")
    a @ b  # warm up caches and kernels
    started, done = time.perf_counter(), 0
    while done < repeats or time.perf_counter() - started < min_seconds:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        done += 1
    return 2 * n ** 3 / best


class PeakFlops:
    """The peak FLOP/s that MFU divides by, for one device and dtype: the data sheet's on known GPUs, else the
    best matmul burst measured so far.

    On a shared machine any one measurement can fall in a busy moment and read low: on a 2-core VM, neighbours
    once held the bf16 peak at 0.87 TFLOP/s (2.1 when quiet) through train.py's start, and its log then showed
    94% MFU. So runs call sample() now and then, and the best burst wins.
    """

    def __init__(self, device: str | torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self.datasheet = device_peak_flops(device, dtype)
        self.bursts = [] if self.datasheet else [measure_peak_flops(device, dtype)]
        self.last_sample = time.perf_counter()

    def sample(self, min_interval: float = 0.0) -> None:
        """Measure once more (a few short bursts, well under a second), unless the peak is a data sheet's or
        the last measurement is less than min_interval seconds old."""
        if not self.datasheet and time.perf_counter() - self.last_sample >= min_interval:
            self.bursts.append(measure_peak_flops(self.device, self.dtype, repeats=3, min_seconds=0.05))
            self.last_sample = time.perf_counter()

    @property
    def flops(self) -> float:
        return self.datasheet or max(self.bursts)

    def describe(self) -> str:
        if self.datasheet:
            return "data sheet"
        measured = f"measured {DTYPE_NAMES.get(self.dtype, str(self.dtype))} matmul"
        if len(self.bursts) == 1:
            return measured
        # a lowest burst far below the best means something else used the device meanwhile
        return f"{measured}, best of {len(self.bursts)} bursts; lowest {min(self.bursts) / 1e12:.2f}"
