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
import math
import os
import platform
import sys
import time

import torch

from errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str, local_rank: int = 0) -> str:
    """The device to run on, normalised: 'cpu', 'cuda:N' (never a bare 'cuda'), 'mps', ...

    'auto' is the GPU if torch sees one, else the CPU. A GPU always gets its index here, because
    torch.cuda.set_device (and so every CUDA setup step) refuses a device without one; 'auto' and 'cuda'
    take local_rank, which torchrun gives each of its processes on a machine (0 otherwise).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"device={device!r} is not a torch device: use auto, cpu, cuda or cuda:N") from e
    if parsed.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise UserError(f"device={device} but torch sees no CUDA GPU: use --device=cpu (or auto)")
    index = local_rank if parsed.index is None else parsed.index
    count = torch.cuda.device_count()
    if index >= count:
        raise UserError(f"device={device} asks for GPU {index} but torch sees {count} (CUDA_VISIBLE_DEVICES "
                        "decides which): use --device=cuda:0 ... or start fewer processes")
    return f"cuda:{index}"


@functools.cache  # read once: Int8Linear asks for every layer it quantizes
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> frozenset[str]:
    """The bf16 instructions this CPU has (AVX512-BF16, AMX, Arm's BF16); empty if none."""
    return cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_int8_dot_is_exact() -> bool:
    """Whether oneDNN's int8 matmul on this CPU sums byte products without a saturating step: x86 with VNNI
    or AMX, or a CPU that is not x86. x86 CPUs without them (AVX2 only: AMD before Zen 4, Intel before Ice
    Lake) multiply unsigned by signed bytes and add each pair in saturating int16 (vpmaddubsw), which clips
    where both are near the ends of their range."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


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


def set_cpu_threads(local_world_size: int = 1, idle_only: bool = False) -> int:
    """The one CPU thread policy; returns the thread count torch now uses.

    Training (idle_only=False) shares the cores between the processes of a run (torchrun starts one per rank
    and sets OMP_NUM_THREADS=1, which this overrides). Decoding (idle_only=True) takes one thread per core
    that is idle now, at least one, unless OMP_NUM_THREADS says otherwise: decoding a token runs a few
    hundred small ops and each waits for all of its threads, so a thread on a core that another process
    holds is descheduled for a whole time slice and every op waits for it (on a 2-core machine busy with
    training, a small model decoded at 5 tokens/s with 2 threads and at 350 with 1)."""
    if not idle_only:
        torch.set_num_threads(max(1, cpu_cores() // local_world_size))
    elif "OMP_NUM_THREADS" not in os.environ:
        idle = idle_cores()
        torch.set_num_threads(max(1, min(cpu_cores(), math.floor(idle + 0.5))))
    return torch.get_num_threads()


def idle_cores(window: float = 0.15) -> float:
    """How many of this process's cores other processes left idle over the last `window` seconds.

    Measured now, from /proc/stat's per-core counters (idle and iowait against everything, including the
    time a hypervisor stole), not from the load average, which trails by a minute or more: right after a
    training run it still reads about 2 and would give decoding 1 of 2 idle cores. Elsewhere, the cores less
    the 1-minute load average."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        before = _cpu_times(cores)
        time.sleep(window)
        after = _cpu_times(cores)
    except OSError:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return max(0.0, len(cores) - load)
    idle = 0.0
    for cpu, (idle1, total1) in after.items():
        idle0, total0 = before.get(cpu, (idle1, total1))
        if total1 > total0:
            idle += (idle1 - idle0) / (total1 - total0)
        else:  # no tick in the window (a tickless idle core): count it idle
            idle += 1.0
    return idle


def _cpu_times(cores: set[int]) -> dict[int, tuple[int, int]]:
    """{core: (idle + iowait jiffies, all jiffies)} for the given cores, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                out[int(name[3:])] = (values[3] + values[4], sum(values))
    if not out:
        raise OSError("no per-core lines in /proc/stat")
    return out


def is_out_of_memory(e: BaseException) -> bool:
    """Whether e is an allocator's refusal: CUDA raises torch.OutOfMemoryError, CPUs a RuntimeError."""
    text = str(e)
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


@contextlib.contextmanager
def explain_out_of_memory(batch_size: int, block_size: int, advice: str = ""):
    """Turn an out-of-memory error into one line that says what to change (advice: memory.py's plan for it)."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        raise UserError(f"out of memory with batch_size={batch_size} at block_size={block_size}: use a smaller "
                        "--batch_size (raise --gradient_accumulation_steps to keep the tokens per iteration) "
                        "or --gradient_checkpointing=True" + (f". {advice}" if advice else "")) from e


def memory_bytes(device: str) -> int:
    """Total memory of the device: the GPU's, or the machine's RAM for a CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def training_memory_bytes(n_params: int, n_layer: int, n_embd: int, vocab_size: int, tokens: int,
                          dtype: str, checkpointing: bool) -> int:
    """A planning estimate of a training step's peak memory in bytes (not a measurement), for `tokens`
    tokens per micro-batch.

    Weights, gradients and AdamW's two moments are fp32: 16 bytes a parameter. Activations: about 34 bytes
    per token per unit of width per layer in 16-bit autocast (Korthikanti et al. 2022, "Reducing Activation
    Recomputation"), with SDPA's flash or memory-efficient attention, which keeps no T x T scores: so the
    same for 1 x 4096 tokens as for 4 x 1024. Twice that in fp32. Recomputing each block in backward keeps
    only each block's input (2 bytes per token per width, 4 in fp32) plus one block's worth. The LM head
    holds the logits, their log-softmax and their gradient: about 8 bytes per token per vocabulary entry.
    """
    scale = 2 if dtype == "float32" else 1
    per_layer = tokens * n_embd * 34 * scale
    activations = (tokens * n_embd * 2 * scale * n_layer + per_layer) if checkpointing else per_layer * n_layer
    return 16 * n_params + activations + tokens * vocab_size * 8 * scale


def pick_activation_checkpointing(setting, n_params: int, n_layer: int, n_embd: int, vocab_size: int,
                                  tokens: int, dtype: str, total_memory: int) -> tuple[bool, str]:
    """Whether to recompute each block's activations in backward, and why: (on?, why). True/False as set;
    None (or 'auto'): on only where the planned memory of a step without it (training_memory_bytes) exceeds
    3/4 of the device's, since it costs about 30% more compute."""
    if isinstance(setting, str) and setting.lower() in ("true", "false"):
        setting = setting.lower() == "true"
    if setting is True or setting is False:
        return setting, "set by gradient_checkpointing"
    if setting not in (None, "auto"):
        raise UserError(f"gradient_checkpointing={setting!r}: use True, False, or None (auto)")
    need = training_memory_bytes(n_params, n_layer, n_embd, vocab_size, tokens, dtype, checkpointing=False)
    on = need > 0.75 * total_memory
    return on, (f"auto: a step needs about {need / 2**30:.1f} GiB without it, "
                f"{'more' if on else 'less'} than 3/4 of the device's {total_memory / 2**30:.0f} GiB")


def compile_pays_off(device: str) -> tuple[bool, str]:
    """Whether train.py compiles the model on `device`, and why: (yes or no, reason).

    GPUs: yes where Triton runs, compute capability 7.0 and up (V100, T4, A100, ...); older ones train eager.
    CPUs: yes where inductor can build its C++ kernels (a compiler, torch's headers, OpenMP). It
    fuses the elementwise work between the matmuls (GELU, LayerNorm, residual adds, casts, dropout), which on
    a CPU is a large share of a step; the cost is compiling up front (figures in README.md, Benchmark).
    Other devices (mps): not measured, so no.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (7, 0):
            return False, f"GPU compute capability {major}.{minor} is below the 7.0 that Triton needs"
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

# Dense tensor-core peaks in FLOP/s from the vendors' data sheets, by model and form factor; fp32 is TF32
# where the GPU has it (Ampere and later: train.py allows TF32 matmuls). A name is matched exactly
# (gpu_model): "L40" is not "L4", an "H100 NVL" is not an SXM H100, and a name with anything unrecognised (a
# MIG slice, a new variant) gets no data-sheet figure and is measured instead. Form None: the name carries
# no form factor (for H100/H200 that is the SXM part).
GPU_PEAK_FLOPS = {
    ("H200", None): {"bf16": 989e12, "fp16": 989e12, "fp32": 495e12},
    ("H200", "NVL"): {"bf16": 836e12, "fp16": 836e12, "fp32": 418e12},
    ("H100", None): {"bf16": 989e12, "fp16": 989e12, "fp32": 495e12},
    ("H100", "SXM"): {"bf16": 989e12, "fp16": 989e12, "fp32": 495e12},
    ("H100", "PCIe"): {"bf16": 756e12, "fp16": 756e12, "fp32": 378e12},
    ("H100", "NVL"): {"bf16": 835e12, "fp16": 835e12, "fp32": 418e12},
    ("A100", None): {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12},
    ("A100", "SXM"): {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12},
    ("A100", "PCIe"): {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12},
    ("L40S", None): {"bf16": 362e12, "fp16": 362e12, "fp32": 183e12},
    ("L40", None): {"bf16": 181e12, "fp16": 181e12, "fp32": 90.5e12},
    ("L4", None): {"bf16": 121e12, "fp16": 121e12, "fp32": 60e12},
    ("A10G", None): {"bf16": 70e12, "fp16": 70e12, "fp32": 35e12},
    ("A10", None): {"bf16": 125e12, "fp16": 125e12, "fp32": 62.5e12},
    ("RTX 4090", None): {"bf16": 165e12, "fp16": 165e12, "fp32": 82.6e12},
    ("RTX 3090", None): {"bf16": 71e12, "fp16": 71e12, "fp32": 35.6e12},
    ("V100", "SXM"): {"fp16": 125e12, "fp32": 15.7e12},
    ("V100", "PCIe"): {"fp16": 112e12, "fp32": 14e12},
    ("T4", None): {"fp16": 65e12, "fp32": 8.1e12},
}
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
VENDOR_WORDS = {"NVIDIA", "Tesla", "GeForce"}


def gpu_model(name: str) -> tuple[str, str | None] | None:
    """(model, form factor) from torch.cuda.get_device_name(), e.g. 'NVIDIA H100 80GB HBM3' -> ('H100', None),
    'NVIDIA A100-SXM4-80GB' -> ('A100', 'SXM'), 'Tesla V100-PCIE-16GB' -> ('V100', 'PCIe'); None when the
    name holds a word that is not the model, a form factor or a memory size (say 'MIG 1g.10gb')."""
    words = [w for w in name.replace("-", " ").split() if w not in VENDOR_WORDS]
    if not words:
        return None
    model, rest = (" ".join(words[:2]), words[2:]) if words[0] == "RTX" else (words[0], words[1:])
    form = None
    for word in rest:
        upper = word.upper()
        if upper.startswith("SXM"):
            form = "SXM"
        elif upper in ("PCIE", "NVL"):
            form = "PCIe" if upper == "PCIE" else "NVL"
        elif not (upper.endswith("GB") and upper[:-2].isdigit()) and upper not in ("HBM2", "HBM2E", "HBM3", "HBM3E"):
            return None
    return model, form


def datasheet_peak_flops(name: str, dtype: torch.dtype) -> float | None:
    """The data-sheet peak for a GPU of this name and dtype, or None (unknown: measure it instead)."""
    key = gpu_model(name)
    if key is None:
        return None
    peaks = GPU_PEAK_FLOPS.get(key)
    if peaks is None and key[1] == "SXM":  # a card sold only as SXM may name it or not
        peaks = GPU_PEAK_FLOPS.get((key[0], None))
    return peaks.get(DTYPE_NAMES.get(dtype, "fp32")) if peaks else None


def device_peak_flops(device: str | torch.device, dtype: torch.dtype) -> float | None:
    """The data-sheet peak of this CUDA device for dtype, or None (CPU, unknown GPU: measure it instead)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return datasheet_peak_flops(torch.cuda.get_device_name(device), dtype)


def cpu_product_size(dtype: torch.dtype, gen: torch.Generator, seconds: float = 0.25) -> int:
    """The side of the CPU's peak-measuring products: 2048, or, where this dtype is so slow on this CPU that a
    2048^3 product would take over two seconds, a side at which one takes about `seconds`. bf16 and fp16 without
    native instructions (an AVX2 CPU) multiply at 1-2 GFLOP/s: one 2048^3 product took 11 s there, and
    train.py's start and its minutely re-measurements took minutes."""
    a = torch.randn(512, 512, dtype=dtype, generator=gen)
    a @ a
    best = float("inf")
    for _ in range(3):  # the best of three: a busy moment must not shrink the products of a fast dtype
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    rate = 2 * 512 ** 3 / max(best, 1e-9)
    if 2 * 2048 ** 3 / rate < 2.0:
        return 2048
    return int(max(256, (seconds * rate / 2) ** (1 / 3) // 64 * 64))


def measure_peak_flops(device: str | torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 10,
                       min_seconds: float = 0.5, per_sync: int | None = None) -> float:
    """Achievable matmul FLOP/s on this device and dtype: the best of many n x n x n products.
    The honest denominator for MFU where no data-sheet peak applies (a CPU, an unknown GPU). It keeps
    multiplying for at least min_seconds, so a moment of contention (another process, a CPU clocking up)
    cannot set the peak. On a GPU the products are larger (4096^3) and 8 run between synchronisations, so
    launch and sync overheads do not count as slowness (one 2048^3 product, about 20 microseconds on an H100,
    per sync reads a big GPU far below its peak, and MFU then reads high); 8 x 4096^3 still takes only about
    0.1 s on a 10 TFLOP/s GPU, so the minutely re-measurement stays cheap."""
    device = torch.device(device)
    gpu = device.type == "cuda"
    gen = torch.Generator(device).manual_seed(0)  # its own: measuring never moves the training RNG (dropout)
    if n is None and not gpu:
        n = cpu_product_size(dtype, gen)
    n = n or 4096
    per_sync = per_sync or (8 if gpu else 1)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    best = float("inf")
    a @ b  # warm up caches and kernels
    started, done = time.perf_counter(), 0
    while done < repeats or time.perf_counter() - started < min_seconds:
        if gpu:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(per_sync):
            a @ b
        if gpu:
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - t0) / per_sync)
        done += 1
    return 2 * n ** 3 / best


class PeakFlops:
    """The peak FLOP/s that MFU divides by, for one device and dtype: the data sheet's on known GPUs, else the
    best matmul burst measured so far.

    On a shared machine any one measurement can fall in a busy moment and read low: on a 2-core VM, neighbours
    once held the bf16 peak at 0.87 TFLOP/s (2.1 when quiet) through train.py's start, and its log then showed
    94% MFU. So runs call sample() now and then, and the best burst wins. The first burst is short too (3
    products after a warm-up: 1.5 s in fp32 on a 2-core AVX2 CPU, against 3.7 s for 10): every train.py start
    pays it, the tests' many short runs among them, and the later samples keep the best.
    """

    def __init__(self, device: str | torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self.datasheet = device_peak_flops(device, dtype)
        self.bursts = [] if self.datasheet else [measure_peak_flops(device, dtype, repeats=3, min_seconds=0.2)]
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
