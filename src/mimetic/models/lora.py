"""LoRA layers' training forward in one step: the base matmul and the adapter's update fused.

PEFT's ``lora.Linear`` computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling`` as five
operations, each writing a ``tokens × out_features`` tensor (the base output, the adapter's
output, its scaled copy, the sum), and its backward adds two ``tokens × in_features`` input
gradients. With the base weights frozen and no dropout (mimetic's default), the same
arithmetic fits in three matmuls forward (``h = x·Aᵀ``; ``y = x·Wᵀ``; ``y += h·(s·B)ᵀ`` in
place, :func:`torch.addmm`) and five backward, accumulating in place — the fusion of
Hu et al. 2021's ``h = W₀x + BAx`` (section 4.1) that every LoRA kernel library does on GPUs.

On the project's 2-core AMD EPYC (bf16 matmul peak 373–416 GFLOP/s that day) a 4 × 512
SmolLM2-135M step ran 1.01–1.05× as fast as with PEFT's forward, in four runs of
``benchmarks/step_profile.py`` (the two interleaved in one process; figures in
``benchmarks/RESULTS.md``). What LoRA still adds to a layer (16–43% over the frozen layer's
matmuls alone, in a micro-benchmark of SmolLM2's shapes) is about half the adapter's own
rank-16 matmuls, which no fusion removes. The
gradients equal PEFT's in fp32, and in bf16 are as close to the fp32 ones as PEFT's own
(``tests/test_lora_fused.py``). Only the training forward changes: the
adapter's weights, their names and PEFT's saving and merging are untouched, and a layer this
does not cover (dropout, DoRA or another variant, several adapters, a merged or disabled
adapter, 4-bit or non-``Linear`` base layers) keeps PEFT's forward.
"""

from __future__ import annotations

import functools
import types
from typing import Any


@functools.cache
def _function() -> Any:
    """The autograd function, built on first use so that importing this module needs no torch."""
    import torch

    class FusedLoRALinear(torch.autograd.Function):
        """``y = x·Wᵀ (+ bias) + s·(x·Aᵀ)·Bᵀ`` with ``W`` frozen; ``A``, ``B`` trainable.

        Shapes: ``x`` (..., in), ``W`` (out, in), ``A`` (r, in), ``B`` (out, r); returns (..., out)
        in ``dtype`` (the compute precision: autocast's where it is on, else ``W``'s); gradients of
        ``x``, ``A`` and ``B`` in their own dtypes.
        """

        @staticmethod
        def forward(ctx: Any, x: Any, weight: Any, bias: Any, a: Any, b: Any, scaling: float, dtype: Any) -> Any:
            with torch.autocast(x.device.type, enabled=False):
                x2 = x.reshape(-1, x.shape[-1]).to(dtype)
                w, a_c, bs = weight.to(dtype), a.to(dtype), (b * scaling).to(dtype)
                h = torch.mm(x2, a_c.t())
                y = torch.mm(x2, w.t()) if bias is None else torch.addmm(bias.to(dtype), x2, w.t())
                y.addmm_(h, bs.t())
            ctx.save_for_backward(x2, w, a_c, bs, h)
            ctx.scaling, ctx.shape, ctx.a_dtype, ctx.b_dtype, ctx.x_dtype = scaling, x.shape, a.dtype, b.dtype, x.dtype
            return y.reshape(*x.shape[:-1], weight.shape[0])

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            x2, weight, a_c, bs, h = ctx.saved_tensors
            g2 = grad.reshape(-1, weight.shape[0]).to(weight.dtype)
            gh = torch.mm(g2, bs)  # (tokens, r)
            grad_x = grad_a = grad_b = None
            if ctx.needs_input_grad[0]:
                grad_x = torch.mm(g2, weight)
                grad_x.addmm_(gh, a_c)
                grad_x = grad_x.reshape(ctx.shape).to(ctx.x_dtype)
            if ctx.needs_input_grad[3]:
                grad_a = torch.mm(gh.t(), x2).to(ctx.a_dtype)
            if ctx.needs_input_grad[4]:
                grad_b = torch.mm(g2.t(), h).to(ctx.b_dtype).mul_(ctx.scaling)
            return grad_x, None, None, grad_a, grad_b, None, None

    return FusedLoRALinear


def _covered(module: Any) -> bool:
    """Whether ``module`` is a PEFT LoRA ``Linear`` whose training forward :func:`fuse` can take."""
    import torch
    from peft.tuners.lora.layer import Linear

    if not isinstance(module, Linear) or type(module) is not Linear:
        return False  # a subclass (bitsandbytes' 4-bit, a variant) has its own forward
    base = module.get_base_layer()
    if type(base) is not torch.nn.Linear or base.weight.requires_grad:
        return False
    if len(module.lora_A) != 1 or getattr(module, "lora_variant", {}) or getattr(module, "fan_in_fan_out", False):
        return False
    name = next(iter(module.lora_A))
    return isinstance(module.lora_dropout[name], torch.nn.Identity)


def _forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    """PEFT's forward where it has work this one does not do, else the fused step."""
    active = self.active_adapters
    if (args or kwargs or self.disable_adapters or self.merged or len(active) != 1
            or active[0] not in self.lora_A or not self.training):
        return type(self).forward(self, x, *args, **kwargs)
    import torch

    name = active[0]
    base = self.get_base_layer()
    kind = x.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else base.weight.dtype
    return _function().apply(x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight,
                             float(self.scaling[name]), dtype)


def fuse(model: Any) -> int:
    """Give every covered LoRA layer of ``model`` the fused training forward; returns how many.

    Covered: PEFT ``lora.Linear`` on a frozen ``torch.nn.Linear``, one adapter, no dropout, no
    variant (DoRA…). In evaluation mode (``model.eval()``), merged, disabled or with adapter
    names given per call, a layer runs PEFT's own forward, so generation and NLL are unchanged.
    Under autocast the layer computes in autocast's dtype, as PEFT's would; the output is
    returned in that dtype.
    """
    n = 0
    for module in model.modules():
        if _covered(module):
            module.forward = types.MethodType(_forward, module)
            n += 1
    return n
