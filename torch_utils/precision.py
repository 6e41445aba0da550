"""Compute precision of the conv-heavy parts (G's synthesis network, D's conv blocks): names, detection, casts.

Names: 'fp32' (everything float32), 'bf16' (bfloat16 convs: float32's range, 8 mantissa bits), 'fp16'
(float16 convs with output clamping, StyleGAN2's recipe for V100-class GPUs), 'auto' (resolved by
`resolve`: bf16 where the hardware has native bf16 units, fp16 on CUDA GPUs without them, fp32 otherwise).
Everything precision-sensitive stays float32 whatever the name: G's mapping, the tri-plane decoder and
compositing, D's hypernetwork, conditioning and epilogue, the losses and R1's gradient penalty.
"""

import contextlib
import functools

import torch

CHOICES = ('auto', 'fp32', 'bf16', 'fp16')
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}

# /proc/cpuinfo flags of x86 CPUs with native bf16 arithmetic (AMX tiles or AVX512-BF16 dot products).
CPU_BF16_FLAGS = ('amx_bf16', 'avx512_bf16')


@functools.cache
def cpu_has_bf16(cpuinfo_path: str = '/proc/cpuinfo') -> bool:
    """True if the CPU computes bf16 natively (otherwise oneDNN emulates it, slower than fp32)."""
    try:
        with open(cpuinfo_path, encoding='utf-8') as f:
            for line in f:
                if line.startswith('flags'):
                    return any(flag in line.split() for flag in CPU_BF16_FLAGS)
    except OSError:
        pass
    return False


def resolve(name: str, device_type: str | None = None) -> str:
    """'auto' -> the concrete precision for `device_type` ('cuda' or 'cpu'; None = cuda if available)."""
    if name not in CHOICES:
        raise ValueError(f'precision must be one of {", ".join(CHOICES)}, got {name!r}')
    if name != 'auto':
        return name
    if device_type is None:
        device_type = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device_type == 'cuda':
        if torch.cuda.is_bf16_supported(including_emulation=False):  # Ampere (sm_80) and newer
            return 'bf16'
        return 'fp16'  # V100-class: fast fp16 tensor cores, no bf16
    return 'bf16' if cpu_has_bf16() else 'fp32'


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype the convs run in for a resolved precision on `device` (fp16 only on CUDA: CPUs have no
    fast fp16 convs, so an fp16 module computes in fp32 there)."""
    if name == 'fp16' and device.type != 'cuda':
        return torch.float32
    return DTYPES[name]


def autocast(device: torch.device, name: str):
    """A torch.autocast context running matmuls/convs in the precision's dtype; a no-op for fp32."""
    dtype = compute_dtype(name, device)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
