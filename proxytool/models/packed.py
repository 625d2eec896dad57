"""Linear layers whose weights oneDNN has reordered once, for fp32 inference on CPU.

torch runs an fp32 ``nn.Linear`` on CPU through MKL's sgemm, which is fast for one row and slow for a
few: on this project's 2-core machine a Qwen 0.5B decode step with 2 rows took 1.9× as long as with 1,
and the 151,936-wide output layer 2.2× (docs/performance.md, "CPU: packed weights"). oneDNN's linear with
a weight reordered ahead of time has no such cliff; decode steps ran 1.3–2.5× faster at 2–8 rows
and as fast at one row, with the same greedy tokens. The results are the same products summed in
another order, so logits differ in the last bits only, as between two batch sizes. Small layers lose
(each call converts its input and output), so ``--pack-weights auto`` packs only the large ones.
"""

import torch


class PackedLinear(torch.nn.Module):
    """An inference-only ``nn.Linear`` (same inputs, same outputs) over a oneDNN-reordered weight."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # plain attributes, not buffers: oneDNN tensors cannot be moved, saved or trained
        self.packed_weight = linear.weight.detach().to_mkldnn()
        self.packed_bias = None if linear.bias is None else linear.bias.detach().to_mkldnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).contiguous().to_mkldnn()
        out = torch.ops.aten.mkldnn_linear(rows, self.packed_weight, self.packed_bias).to_dense()
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed=oneDNN"


def packs_by_default(device: torch.device, dtype: torch.dtype, compiled: bool) -> bool:
    """``--pack-weights auto``: fp32 on CPU, eager (bf16 already runs through oneDNN, where reordering
    ahead measured no faster; torch.compile makes its own kernels)."""
    return device.type == "cpu" and dtype == torch.float32 and not compiled and torch.backends.mkldnn.is_available()


AUTO_MIN_WEIGHTS = 1 << 20
"""``--pack-weights auto`` packs a layer of at least this many weights: each call converts its input and
output (~45 µs on this machine), which costs more than it saves on small layers (a tiny test model's
forward took 2.6× as long packed); a Qwen 0.5B step ran as fast with only its larger layers packed."""


def pack_as_asked(model: torch.nn.Module, mode: str, compiled: bool) -> None:
    """``--pack-weights``: ``on`` packs every linear layer; ``auto`` the large ones, where it measured faster."""
    weight = next(model.parameters())
    if mode == "on":
        pack_linears(model)
    elif mode == "auto" and packs_by_default(weight.device, weight.dtype, compiled):
        pack_linears(model, min_weights=AUTO_MIN_WEIGHTS)


def pack_linears(model: torch.nn.Module, min_weights: int = 0) -> int:
    """Replace the model's ``nn.Linear`` layers of at least ``min_weights`` weights by :class:`PackedLinear`
    in place; returns how many.

    A PEFT adapter's own layers (``lora_A``, ``lora_B``: kept in ``ModuleDict``s) stay as they are: PEFT
    reads their weights directly. The layers under them (``base_layer``) are packed.
    """
    places = [
        (parent, name)
        for parent in model.modules()
        if not isinstance(parent, torch.nn.ModuleDict)
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear and child.weight.numel() >= min_weights
    ]
    if not places:
        return 0
    for parent, name in places:  # one layer at a time: each dense weight is dropped as soon as it is packed
        setattr(parent, name, PackedLinear(getattr(parent, name)))
    _copy_out_of_files(model)
    return len(places)


def _copy_out_of_files(model: torch.nn.Module) -> None:
    """Copy the tensors left (embeddings, norms) into the process's own memory. transformers maps the
    safetensors files into memory and each weight is a view of its file; packing read every page, and
    they stay resident while any view of the file lives, so after packing the model would count its
    linear weights twice."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()
