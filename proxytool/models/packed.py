"""Linear layers whose weights are laid out once for fast fp32 inference on a CPU.

torch runs an fp32 ``nn.Linear`` on a CPU through MKL's sgemm with the weight as stored ([out, in]),
and for the few rows of a decode step that kernel is slow: on the 2-core machine of the first
measurements a Qwen 0.5B step with 2 rows took 1.9× as long as with 1; on an AMD EPYC (Zen 3, AVX2)
2-core machine the 1-row products were slow too (docs/performance.md, "CPU: packed weights"). Two
other layouts compute the same products summed in another order (logits differ in the last bits, as
between two batch sizes; greedy tokens are checked equal in the tests):

- ``on`` (:class:`PackedLinear`): the weight reordered once for oneDNN. No cliff at 2-16 rows; each
  call converts its input and output, so small layers lose.
- ``transposed`` (:class:`TransposedLinear`): the weight stored [in, out], which MKL multiplies through
  another path; on the AMD machine 1.4-2.2× faster than torch's at 1-2 rows on one thread.
- ``blocked`` (:class:`BlockedLinear`): the weight reordered into the blocked format oneDNN picks for the
  rows per call the command runs (what torch.compile's CPU backend does with a frozen weight), called
  without converting input or output. On the AMD machine, one thread, the products over a Qwen 0.5B's
  large weights took 2.1× their one-row time at 2 rows in the transposed layout (198 against 94 ms:
  as if the weights were read twice); blocked for 2 rows they took 140-168 ms.

Which is fastest depends on the machine, the thread count, the rows per call and the weight's shape (on
the AMD machine, one row, one thread: a Qwen 0.5B's [4864, 896] weights ran fastest transposed, 1.08 ms
against torch's 1.47; its [896, 4864] ones in torch's own layout, 1.07 against 1.36 transposed), so
``--pack-weights auto`` times the four on the model's own layers, shape by shape, once per machine, thread
count and torch version (:func:`measured_layouts`, cached), and gives each shape its fastest.
"""

import json
import os
import statistics
import time

import torch

from proxytool.errors import ProxyToolError

LAYOUTS = ("on", "blocked", "transposed", "off")
"""Layouts a linear weight can take: oneDNN-reordered (plain or blocked for a row count), stored
transposed, or torch's own."""
UNSIZED_LAYOUTS = ("on", "transposed", "off")
"""The layouts ``auto`` picks from when the rows per call are not known (``blocked`` is laid out for one
count, and is timed at each count for its own)."""


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


class TransposedLinear(torch.nn.Module):
    """An inference-only ``nn.Linear`` whose weight is stored transposed, [in, out], contiguous."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_t = torch.nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        out = rows @ self.weight_t if self.bias is None else torch.addmm(self.bias, rows, self.weight_t)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight stored transposed"


class BlockedLinear(torch.nn.Module):
    """An inference-only ``nn.Linear`` over a weight in oneDNN's blocked format for ``rows`` rows per call
    (any row count is computed; others may run slower)."""

    def __init__(self, linear: torch.nn.Linear, rows: int = 1):
        super().__init__()
        self.in_features, self.out_features, self.rows = linear.in_features, linear.out_features, rows
        # a plain attribute, not a buffer: a oneDNN tensor cannot be moved, saved or trained
        self.blocked_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.blocked_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, blocked for {self.rows} rows"


_LAYERS = {"on": PackedLinear, "blocked": BlockedLinear, "transposed": TransposedLinear}


def _layer(layout: str, linear: torch.nn.Linear, rows: int | None) -> torch.nn.Module:
    return BlockedLinear(linear, rows or 1) if layout == "blocked" else _LAYERS[layout](linear)


def layout_of(model: torch.nn.Module) -> str:
    """The layout of the model's linear layers that were laid out (``off`` when none; ``+``-joined when mixed)."""
    kinds = {name for module in model.modules() for name, cls in _LAYERS.items() if isinstance(module, cls)}
    return "+".join(sorted(kinds)) or "off"


def packs_by_default(device: torch.device, dtype: torch.dtype, compiled: bool) -> bool:
    """Whether ``--pack-weights auto`` lays weights out here: fp32 on CPU, eager (bf16 already runs
    through oneDNN, where reordering ahead measured no faster; torch.compile makes its own kernels)."""
    return device.type == "cpu" and dtype == torch.float32 and not compiled and torch.backends.mkldnn.is_available()


AUTO_MIN_WEIGHTS = 1 << 19
"""``--pack-weights auto`` times and lays out layers of at least this many weights (a Qwen 0.5B's
[896, 896] projections and up); smaller ones move a step little either way, and tiny models (the tests')
keep torch's kernels without being timed."""


def pack_as_asked(model: torch.nn.Module, mode: str, compiled: bool, rows: int | None = None) -> str:
    """``--pack-weights``: ``on`` / ``blocked`` / ``transposed`` lay out every linear layer so; ``auto``
    the large ones, each shape in the layout measured fastest for it on this machine at ``rows`` rows per
    call (None: not known, as in serve: a mix of 1, 2 and 8). Returns the layouts applied (``+``-joined;
    ``off``: none)."""
    weight = next(model.parameters())
    if mode in _LAYERS:
        try:
            pack_linears(model, layout=mode, rows=rows)
        except RuntimeError as error:  # oneDNN's half-precision kernels need CPU features this one lacks
            raise ProxyToolError(f"--pack-weights {mode}: {str(error).splitlines()[0]}") from error
        return mode
    places = _places(model, AUTO_MIN_WEIGHTS) if mode == "auto" else []
    if places and packs_by_default(weight.device, weight.dtype, compiled):
        layers = [getattr(parent, name) for parent, name in places]
        fastest = measured_layouts(layers, rows)
        chosen = [(parent, name, fastest[_shape(layer)]) for (parent, name), layer in zip(places, layers)]
        _lay_out(model, [place for place in chosen if place[2] in _LAYERS], rows)
        return layout_of(model)
    return "off"


def pack_linears(model: torch.nn.Module, min_weights: int = 0, layout: str = "on", rows: int | None = None) -> int:
    """Replace the model's ``nn.Linear`` layers of at least ``min_weights`` weights by the ``layout``'s
    layer (:class:`PackedLinear` for ``on``, :class:`BlockedLinear` for ``blocked``, blocked for ``rows``
    rows per call (None: 1), :class:`TransposedLinear` for ``transposed``) in place; returns how many.

    A PEFT adapter's own layers (``lora_A``, ``lora_B``: kept in ``ModuleDict``s) stay as they are: PEFT
    reads their weights directly. The layers under them (``base_layer``) are laid out.
    """
    places = _places(model, min_weights)
    _lay_out(model, [(parent, name, layout) for parent, name in places], rows)
    return len(places)


def _lay_out(model: torch.nn.Module, places: list[tuple[torch.nn.Module, str, str]], rows: int | None) -> None:
    """Give each (parent, name)'s linear layer its layout."""
    if not places:
        return
    for parent, name, layout in places:  # one layer at a time: each dense weight is dropped as soon as it is copied
        setattr(parent, name, _layer(layout, getattr(parent, name), rows))
    _copy_out_of_files(model)


def _shape(linear: torch.nn.Linear) -> tuple[int, int]:
    return linear.out_features, linear.in_features


def _places(model: torch.nn.Module, min_weights: int) -> list[tuple[torch.nn.Module, str]]:
    return [
        (parent, name)
        for parent in model.modules()
        if not isinstance(parent, torch.nn.ModuleDict)
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear and child.weight.numel() >= min_weights
    ]


def _copy_out_of_files(model: torch.nn.Module) -> None:
    """Copy the tensors left (embeddings, norms) into the process's own memory. transformers maps the
    safetensors files into memory and each weight is a view of its file; laying out read every page,
    and they stay resident while any view of the file lives, so afterwards the model would count its
    linear weights twice."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()


TIMED_ROWS = (1, 2, 8)
"""Rows per call ``measured_layouts`` weighs when the command's are not known: one prompt's step, a
LoRA pair's two rows, a batch."""

COLD_BYTES = 256 << 20
"""Timing a shape cycles through its layers up to this many bytes of weights (more than a CPU's last-level
cache usually holds), so they come from memory, as in a decode step; one layer called over and over
would come from the cache and time another kernel's race."""


def measured_layouts(layers: list[torch.nn.Linear], rows: int | None = None) -> dict[tuple[int, int], str]:
    """The layout ``auto`` gives these layers on this machine, per shape ``(out, in)``: the fastest at
    ``rows`` rows per call, or (None) the one with the lowest mean over :data:`TIMED_ROWS` of its time
    relative to the fastest, among :data:`UNSIZED_LAYOUTS`.

    Each shape's timings at each row count (:func:`time_layouts`) are taken once, then read from
    ``$PROXYTOOL_HOME/cache/linear_layouts.json``, kept by CPU, thread count, torch version and shape."""
    from proxytool.files.atomic import write_text
    from proxytool.files.paths import cache_dir
    from proxytool.runtime import cpu_name

    by_shape: dict[tuple[int, int], list[torch.nn.Linear]] = {}
    for layer in layers:
        by_shape.setdefault(_shape(layer), []).append(layer)
    machine = [cpu_name(), f"{os.cpu_count()} cpus", f"{torch.get_num_threads()} threads", f"torch {torch.__version__}"]
    wanted = [str(rows)] if rows else [str(n) for n in TIMED_ROWS]
    candidates = LAYOUTS if rows else UNSIZED_LAYOUTS
    path = cache_dir() / "linear_layouts.json"
    cached, timed_now = _read_json(path), False
    fastest = {}
    for (out, inp), same_shape in sorted(by_shape.items()):
        key = " | ".join([*machine, f"{out}x{inp}"])
        ms = _timings_of(cached.get(key))
        missing = [n for n in wanted if any(n not in ms.get(layout, {}) for layout in LAYOUTS)]
        if missing:
            timed = time_layouts(same_shape, tuple(int(n) for n in missing))
            ms = {layout: {**ms.get(layout, {}), **timed[layout]} for layout in LAYOUTS}
            cached[key], timed_now = {"ms_per_call": ms}, True
        fastest[(out, inp)] = min(candidates, key=lambda layout: _relative_cost(ms, layout, wanted, candidates))
    if timed_now:
        try:
            write_text(path, json.dumps(cached, indent=1) + "\n")
        except OSError:  # a read-only home still decodes; it times again next load
            pass
    return fastest


def _read_json(path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _timings_of(entry) -> dict:
    """A cache entry's ``{layout: {rows: ms}}``, keeping only well-formed numbers."""
    ms = entry.get("ms_per_call") if isinstance(entry, dict) else None
    if not isinstance(ms, dict):
        return {}
    return {
        layout: {n: v for n, v in per_rows.items() if isinstance(v, int | float) and v > 0}
        for layout, per_rows in ms.items()
        if layout in LAYOUTS and isinstance(per_rows, dict)
    }


def time_layouts(same_shape: list[torch.nn.Linear], rows: tuple[int, ...]) -> dict:
    """Median ms of one call of a layer of this shape in each layout at each row count, the layers cycled
    (up to :data:`COLD_BYTES`, laid out one layout at a time): ``{layout: {rows: ms}}`` (rows as strings,
    for JSON)."""
    weight = same_shape[0].weight
    cycled = same_shape[: max(1, COLD_BYTES // (weight.numel() * weight.element_size()))]
    result: dict[str, dict[str, float]] = {layout: {} for layout in LAYOUTS}
    with torch.inference_mode():
        for layout in LAYOUTS:
            laid = None
            for n in rows:
                if laid is None or layout not in UNSIZED_LAYOUTS:  # only ``blocked`` is laid out per row count
                    laid = cycled if layout == "off" else [_layer(layout, linear, n) for linear in cycled]
                x = torch.randn(n, weight.shape[1], dtype=weight.dtype)
                result[layout][str(n)] = round(_median_ms(laid, x) / len(laid), 4)
            del laid
    return result


def _median_ms(layers: list, x: torch.Tensor, passes: int = 3) -> float:
    """Median ms of one pass calling each layer on ``x``, after one pass untimed."""
    for layer in layers:
        layer(x)
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        for layer in layers:
            layer(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _relative_cost(ms: dict, layout: str, rows: list[str], candidates: tuple[str, ...]) -> float:
    return statistics.mean(ms[layout][n] / max(min(ms[lay][n] for lay in candidates), 1e-9) for n in rows)
