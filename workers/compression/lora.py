"""A small LoRA adapter on a causal LM: token blocks from text, training, task loss with and
without an adapter, and the adapter on disk.

The adapter is peft's own state dict (`get_peft_model_state_dict`): keys like
`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` ([r, in]) and `...lora_B.weight`
([out, r]); the update a module gets is `B @ A * alpha / r`. The base model is borrowed, never
kept changed: peft's LoRA layers are wrapped around it for the duration of one call and
unloaded again (not merged), and every parameter's `requires_grad` is put back, so the same
model object serves the base loss, training and any number of adapters in one process.

peft initialises A randomly (Kaiming uniform) and B at zero under `torch.manual_seed(cfg.seed)`,
so `initial_adapter(model, cfg)` is exactly where training started: the task vector of an adapter
is `adapter - initial_adapter(...)` (see compeft.py).

torch and peft are imported where used (STYLE habit 7): pip install torch==2.13.0 peft==0.21.2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 8
    alpha: int = 16  # LoRA scaling is alpha / rank
    target_modules: tuple = ("q_proj", "v_proj")
    lr: float = 1e-3
    steps: int = 60
    seq_len: int = 128
    batch: int = 4
    seed: int = 0  # adapter initialisation and block order

    def __post_init__(self):
        if self.rank < 1 or self.steps < 1 or self.batch < 1 or self.seq_len < 2:
            raise ValueError("need rank, steps, batch >= 1 and seq_len >= 2")
        if not self.target_modules:
            raise ValueError("target_modules is empty")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))

    def digest(self, *extra: str) -> str:
        """A short hash of every field (and of `extra`, e.g. the model and data versions): the
        name a trained adapter is cached under."""
        blob = json.dumps([dataclasses.asdict(self), list(extra)], sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _require_peft():
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise ImportError("LoRA needs torch and peft: pip install torch==2.13.0 "
                          "peft==0.21.2") from e


def token_blocks(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """Every text tokenized without special tokens, followed by the tokenizer's EOS id when it
    has one (`eos_token_id`), all concatenated in order and cut into `[N, seq_len]` int64 blocks;
    the remainder shorter than a block is dropped. `tokenizer.encode(text)` may return a list of
    ids (transformers) or an object with `.ids` (tokenizers). Raises ValueError when the texts
    make less than one block."""
    import torch

    if seq_len < 2:
        raise ValueError("seq_len must be >= 2")
    eos = getattr(tokenizer, "eos_token_id", None)
    ids: list[int] = []
    for text in texts:
        try:
            enc = tokenizer.encode(text, add_special_tokens=False)
        except TypeError:  # a tokenizer whose encode takes the text only
            enc = tokenizer.encode(text)
        ids.extend(getattr(enc, "ids", enc))
        if isinstance(eos, int):
            ids.append(eos)
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"{len(ids)} tokens make no block of {seq_len}")
    return torch.tensor(ids[:n * seq_len], dtype=torch.int64).view(n, seq_len)


@contextlib.contextmanager
def _with_lora(model, cfg: LoraConfig) -> Iterator[Any]:
    """peft's LoRA layers around `model` (freshly initialised under `cfg.seed`) for the body;
    afterwards the plain modules are back and every `requires_grad` as it was."""
    _require_peft()
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    torch.manual_seed(cfg.seed)
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; harmless
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        peft_model = get_peft_model(model, PeftLoraConfig(
            r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.target_modules),
            lora_dropout=0.0, bias="none", task_type="CAUSAL_LM"))
    try:
        yield peft_model
    finally:
        peft_model.unload()  # removes the LoRA layers without merging them
        for attr in ("peft_config", "_hf_peft_config_loaded"):
            if attr in model.__dict__:
                delattr(model, attr)
        for name, p in model.named_parameters():
            p.requires_grad_(grads.get(name, p.requires_grad))
        model.eval()


def _state_dict(peft_model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    # The embeddings are never adapted here: without this peft looks for a config.json
    # next to the GGUF to decide whether they were, and warns that it has none.
    state = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def initial_adapter(model, cfg: LoraConfig) -> dict[str, torch.Tensor]:
    """The adapter as peft initialises it under `cfg.seed`: where `train_lora` starts."""
    with _with_lora(model, cfg) as peft_model:
        return _state_dict(peft_model)


def _mean_loss(model, batch: torch.Tensor) -> torch.Tensor:
    return model(input_ids=batch, labels=batch).loss


def train_lora(model, blocks: torch.Tensor, cfg: LoraConfig,
               progress: Callable[[int, int, float], None] | None = None
               ) -> dict[str, torch.Tensor]:
    """`cfg.steps` AdamW steps (no weight decay, constant `cfg.lr`) of next-token cross-entropy
    on `cfg.batch` blocks each, drawn without replacement in a `cfg.seed` order (a new order each
    pass over the blocks). Returns the trained adapter's state dict; `progress(step, steps,
    loss)` is called after every step. `model` comes back unchanged."""
    import torch

    if blocks.ndim != 2 or blocks.shape[0] < cfg.batch:
        raise ValueError(f"need [N >= {cfg.batch}, seq_len] blocks, got {tuple(blocks.shape)}")
    gen = torch.Generator().manual_seed(cfg.seed)
    order: list[int] = []
    with _with_lora(model, cfg) as peft_model:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        peft_model.train()
        for step in range(1, cfg.steps + 1):
            if len(order) < cfg.batch:
                order = torch.randperm(blocks.shape[0], generator=gen).tolist()
            picked, order = order[:cfg.batch], order[cfg.batch:]
            loss = _mean_loss(peft_model, blocks[picked])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            if progress is not None:
                progress(step, cfg.steps, float(loss.detach()))
        return _state_dict(peft_model)


def _evaluate(model, blocks: torch.Tensor, batch: int) -> float:
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, blocks.shape[0], batch):
            chunk = blocks[start:start + batch]
            predicted = chunk.shape[0] * (chunk.shape[1] - 1)
            total += float(_mean_loss(model, chunk)) * predicted
            count += predicted
    return total / count


def task_loss(model, blocks: torch.Tensor,
              adapter: Mapping[str, Any] | None, cfg: LoraConfig) -> float:
    """Mean next-token cross-entropy (nats) over every predicted token of `blocks`, with
    `adapter` (a peft LoRA state dict of `cfg`'s shape; torch tensors or numpy arrays) applied,
    or of the base model when it is None. Raises ValueError for an adapter whose keys do not fit
    `cfg`. `model` comes back unchanged."""
    import numpy as np
    import torch

    if blocks.ndim != 2 or blocks.shape[0] == 0:
        raise ValueError(f"need [N >= 1, seq_len] blocks, got {tuple(blocks.shape)}")
    model.eval()
    if adapter is None:
        return _evaluate(model, blocks, cfg.batch)
    from peft import set_peft_model_state_dict

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
               if isinstance(v, np.ndarray) else v.float() for k, v in adapter.items()}
    with _with_lora(model, cfg) as peft_model:
        expected = set(_state_dict(peft_model))
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise ValueError(f"adapter does not fit the config: missing {missing[:3]}, "
                             f"unexpected {extra[:3]}")
        set_peft_model_state_dict(peft_model, tensors)
        peft_model.eval()
        return _evaluate(peft_model, blocks, cfg.batch)


def merged_model(model, adapter: Mapping[str, Any], cfg: LoraConfig):
    """A copy of `model` with `adapter` folded into its weights (W + B @ A * alpha / rank for
    each adapted module): a plain model that computes what the model with the adapter computes,
    for export. `model` is left unchanged. Raises ValueError for a key that names no module."""
    import copy

    import torch

    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    scale = cfg.alpha / cfg.rank
    with torch.no_grad():
        for key, a in adapter.items():
            if ".lora_A." not in key:
                continue
            path = key.removeprefix("base_model.model.").split(".lora_A.", 1)[0]
            if path not in modules:
                raise ValueError(f"adapter key {key!r} names no module of the model")
            b = torch.as_tensor(adapter[key.replace(".lora_A.", ".lora_B.")]).float()
            weight = modules[path].weight
            weight += (b @ torch.as_tensor(a).float() * scale).to(weight.dtype)
    out.eval()
    return out


def save_adapter(adapter: Mapping[str, torch.Tensor], path: Path,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """The adapter as a safetensors file (dtype kept), written to a temporary name and renamed,
    so a file at `path` is always complete."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in adapter.items()}, str(tmp),
              metadata=dict(metadata or {}))
    tmp.replace(path)
    return path


def load_adapter(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def adapter_parameters(adapter: Mapping[str, Any]) -> int:
    return sum(math.prod(v.shape) for v in adapter.values())


def safetensors_bytes(adapter: Mapping[str, torch.Tensor], dtype: torch.dtype) -> int:
    """Size of `adapter` as a safetensors file with every tensor cast to `dtype`."""
    from safetensors.torch import save

    return len(save({k: v.to(dtype).contiguous() for k, v in adapter.items()}))


def spread_blocks(blocks: torch.Tensor, n: int) -> torch.Tensor:
    """`n` blocks evenly spaced over all of them (all when there are no more than `n`), so
    that every part of the text is seen."""
    import torch

    if n >= blocks.shape[0]:
        return blocks
    return blocks[torch.linspace(0, blocks.shape[0] - 1, n).round().long()]
