"""How far two evaluations of the same arithmetic may differ by rounding alone: bounds derived from the dtype's unit
roundoff, the length of the sums and the magnitudes, for checks that must hold on any CPU (another summation order,
other SIMD kernels) and still fail on a real defect.

Higham, *Accuracy and Stability of Numerical Algorithms* (2nd ed.), Lemma 3.1 and eq. (3.5): a sum (or dot product)
of n terms computed in any order with unit roundoff u = eps / 2 lies within gamma_n * sum|terms| of the exact value,
gamma_n = n u / (1 - n u); two evaluations in different orders differ by at most twice that. A network output is the
end of a chain of such sums: to first order their errors add, so the chain behaves as one sum over all their terms.

The checks of PEFT arithmetic (merge, init, DDP's gradient average) compare in float64, where this bound is about
1e-8 relative for the tiny networks of the tests: a million times below the smallest defect they look for (a term
dropped from a merge, a gradient scaled by 0.99) and a million times above the rounding actually seen (1e-14). In
float32 the same bound is about 1 relative, which is why those checks do not run in float32."""

from __future__ import annotations

from collections.abc import Callable

import torch


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2: the largest relative error of rounding one real number to ``dtype``."""
    return torch.finfo(dtype).eps / 2


def sum_bound(n: int, scale: float, dtype: torch.dtype) -> float:
    """How far two evaluations of a sum of ``n`` terms whose absolute values add up to ``scale`` may differ in
    ``dtype``: 2 gamma_n scale (module docstring)."""
    nu = n * unit_roundoff(dtype)
    assert nu < 0.5, f"{n} terms: no useful bound in {dtype} (n u = {nu:.2g})"
    return 2.0 * nu / (1.0 - nu) * scale


def counted_forward(model: torch.nn.Module, *inputs: torch.Tensor,
                    run: Callable[..., torch.Tensor] | None = None) -> tuple[torch.Tensor, int]:
    """``model(*inputs)`` (or ``run(*inputs)``, which calls ``model``) and an upper bound on the number of terms that
    one output sums along its way: every sum a module makes runs over at most its own parameters (a linear or conv
    output: its fan-in) or its input's elements (a norm, a softmax, attention over tokens, a mean), so the total over
    all modules, nested ones included, of parameters plus input elements bounds every chain."""
    total = 0

    def count(module: torch.nn.Module, args: tuple) -> None:
        nonlocal total
        total += sum(p.numel() for p in module.parameters(recurse=False))
        total += sum(a.numel() for a in args if isinstance(a, torch.Tensor))

    hooks = [m.register_forward_pre_hook(count) for m in model.modules()]
    try:
        out = (run or model)(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return out, total


def output_bound(n_terms: int, reference: torch.Tensor) -> float:
    """The bound of :func:`sum_bound` for two evaluations of a network whose outputs are of the size of
    ``reference`` (activations between normalisations are O(1): the scale is the larger of 1 and max|reference|)."""
    return sum_bound(n_terms, max(1.0, reference.abs().max().item()), reference.dtype)
