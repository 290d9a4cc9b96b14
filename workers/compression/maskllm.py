"""Learned 2:4 masks (MaskLLM: Fang et al. 2024, "MaskLLM: Learnable Semi-Structured Sparsity
for Large Language Models") on a PyTorch causal LM, next to the magnitude and Wanda masks they
start from.

In every group of 4 consecutive weights along a Linear's input dimension, 2 are kept: one of
the six patterns in `PATTERNS`. MaskLLM gives each group 6 logits and samples a pattern with
Gumbel-softmax (a soft, differentiable mix of the six), the weights frozen, and trains the
logits on calibration text to minimise the LM loss; the final mask is each group's argmax.
As in the paper, the logits start from a prior mask (`prior_strength` on its pattern, 0 on the
others), here Wanda's or magnitude's, so that a short run refines a good mask instead of
searching from uniform. What this module leaves out from the paper: the weight regularisation
and the scaled-logit trick (logits are used as they are), and the thousands of steps. By
default samples are hard (straight-through): in a few steps the model trains on real 2:4 masks
near the prior instead of on soft mixtures far from any 2:4 mask (first-step training loss in
bench/maskllm.py runs from Wanda's mask: 12.4 nats soft at strength 3, 7.8 hard at strength 6).

Scores and masks follow recipes/sparsity.py (groups along the input axis, per output row):
magnitude |W|, Wanda |W_ij|·‖X_j‖₂ over calibration tokens. Masks here are bool tensors of the
weight's shape [out, in]. torch is imported where used.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MLP = r"mlp\.(gate|up|down)_proj$"  # SmolLM2's MLP linears: what the 2:4 recipes prune
PAIRS = tuple(itertools.combinations(range(4), 2))  # the six 2-of-4 patterns


def patterns() -> torch.Tensor:
    """[6, 4] float 0/1: row k keeps the two positions of PAIRS[k]."""
    import torch

    out = torch.zeros(len(PAIRS), 4)
    for k, (a, b) in enumerate(PAIRS):
        out[k, a] = out[k, b] = 1.0
    return out


def linears(model, include: str = MLP) -> dict[str, torch.nn.Module]:
    """The model's nn.Linear modules whose name matches `include` (input size divisible by 4)."""
    import torch

    rx = re.compile(include)
    return {name: m for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and rx.search(name) and m.in_features % 4 == 0}


def input_norms(model, modules: Mapping[str, torch.nn.Module], blocks: torch.Tensor,
                batch: int = 4) -> dict[str, torch.Tensor]:
    """‖X_j‖₂ over every calibration token, per input feature j of each module."""
    import torch

    sums = {name: torch.zeros(m.in_features, dtype=torch.float64) for name, m in modules.items()}

    def hook(name):
        def record(_module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sums[name] += (x * x).sum(0)
        return record

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in modules.items()]
    try:
        with torch.inference_mode():
            for start in range(0, blocks.shape[0], batch):
                model(input_ids=blocks[start:start + batch])
    finally:
        for h in handles:
            h.remove()
    return {name: s.sqrt().float() for name, s in sums.items()}


def top2_of_4(scores: torch.Tensor) -> torch.Tensor:
    """Bool mask of `scores`' shape [out, in]: the 2 highest of every 4 along `in` kept."""
    import torch

    out_f, in_f = scores.shape
    groups = scores.reshape(out_f, in_f // 4, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, groups.topk(2, dim=2).indices, True)
    return keep.reshape(out_f, in_f)


def magnitude_masks(modules: Mapping[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    return {name: top2_of_4(m.weight.detach().abs()) for name, m in modules.items()}


def wanda_masks(modules: Mapping[str, torch.nn.Module],
                norms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: top2_of_4(m.weight.detach().abs() * norms[name][None, :])
            for name, m in modules.items()}


def pattern_index(mask: torch.Tensor) -> torch.Tensor:
    """[out, in/4] int64: which of PAIRS each group of a valid 2:4 mask keeps."""
    import torch

    out_f, in_f = mask.shape
    groups = mask.reshape(out_f, in_f // 4, 4).float()
    match = torch.einsum("ogp,kp->ogk", groups, patterns())  # 2 where the pattern is the mask
    return match.argmax(-1)


def _mask_module(prior: torch.Tensor, strength: float, hard: bool):
    import torch

    class LearnedMask(torch.nn.Module):
        """A parametrization of a Linear's weight: weight × (Gumbel-softmax sample of the six
        patterns: soft, or `hard` one-hot with the soft gradient) while training, weight × the
        argmax pattern in eval mode."""

        def __init__(self):
            super().__init__()
            logits = torch.nn.functional.one_hot(pattern_index(prior), len(PAIRS)).float()
            self.logits = torch.nn.Parameter(logits * strength)
            self.register_buffer("patterns", patterns(), persistent=False)
            self.tau = 1.0

        def mask(self) -> torch.Tensor:
            if self.training:
                mix = torch.nn.functional.gumbel_softmax(self.logits, tau=self.tau, hard=hard,
                                                         dim=-1)
            else:
                mix = torch.nn.functional.one_hot(self.logits.argmax(-1), len(PAIRS)).float()
            return (mix @ self.patterns).reshape(self.logits.shape[0], -1)

        def forward(self, weight):
            return weight * self.mask()

    return LearnedMask()


def learn_masks(model, modules: Mapping[str, torch.nn.Module],
                priors: Mapping[str, torch.Tensor], blocks: torch.Tensor, *, steps: int = 30,
                batch: int = 4, lr: float = 0.05, prior_strength: float = 3.0,
                tau: tuple[float, float] = (1.0, 0.1), hard: bool = True, seed: int = 0,
                progress: Callable[[int, int, float], None] | None = None
                ) -> dict[str, torch.Tensor]:
    """Trains one set of pattern logits per module (starting at `prior_strength` on the prior
    mask's pattern) for `steps` AdamW steps of next-token loss on `batch` blocks each, the
    temperature annealed geometrically from tau[0] to tau[1]; every model weight stays frozen.
    `hard`: the forward pass sees a sampled 2:4 mask (straight-through gradient), so a short
    run trains on masks as they will be used rather than on soft mixtures.
    Returns each module's argmax mask (bool [out, in]); the model comes back unchanged (no
    parametrization left, weights as before, `requires_grad` restored)."""
    import torch
    from torch.nn.utils import parametrize

    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    masks = {}
    for name, m in modules.items():
        parametrize.register_parametrization(m, "weight", _mask_module(
            priors[name], prior_strength, hard))
    try:
        logits = [m.parametrizations.weight[0].logits for m in modules.values()]
        optim = torch.optim.AdamW(logits, lr=lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # Gumbel noise
        model.train()
        order: list[int] = []
        for step in range(steps):
            t = tau[0] * (tau[1] / tau[0]) ** (step / max(1, steps - 1))
            for m in modules.values():
                m.parametrizations.weight[0].tau = t
            if len(order) < batch:
                order = torch.randperm(blocks.shape[0], generator=gen).tolist()
            picked, order = order[:batch], order[batch:]
            chunk = blocks[picked]
            loss = model(input_ids=chunk, labels=chunk).loss
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            if progress is not None:
                progress(step + 1, steps, float(loss.detach()))
        model.eval()
        with torch.no_grad():
            for name, m in modules.items():
                masks[name] = m.parametrizations.weight[0].mask().bool()
    finally:
        for m in modules.values():
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        for name, p in model.named_parameters():
            p.requires_grad_(grads.get(name, p.requires_grad))
        model.eval()
    return masks


def mean_loss(model, blocks: torch.Tensor, batch: int = 4) -> float:
    """Mean next-token cross-entropy (nats) over every predicted token of `blocks`."""
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, blocks.shape[0], batch):
            chunk = blocks[start:start + batch]
            n = chunk.shape[0] * (chunk.shape[1] - 1)
            total += float(model(input_ids=chunk, labels=chunk).loss) * n
            count += n
    return total / count


def masked_loss(model, modules: Mapping[str, torch.nn.Module],
                masks: Mapping[str, torch.Tensor], blocks: torch.Tensor) -> float:
    """`mean_loss` with every module's weight multiplied by its mask, restored afterwards."""
    import torch

    saved = {name: m.weight.detach().clone() for name, m in modules.items()}
    try:
        with torch.no_grad():
            for name, m in modules.items():
                m.weight.mul_(masks[name].to(m.weight.dtype))
        return mean_loss(model, blocks)
    finally:
        with torch.no_grad():
            for name, m in modules.items():
                m.weight.copy_(saved[name])
