"""Resolve, check and load the models of a proxy-tuning run, sharing weights wherever possible.

A LoRA expert whose anti-expert is its own base model is loaded once (by default on CPU): the
anti-expert is the PeftModel with adapters off, and both run as row groups of one batched forward.
On CUDA the expert is merged into its own copy instead, because PEFT's mixed-adapter batch is slower
there (docs/performance.md). Any model asked for twice (same weights, same quantization) is loaded once.
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from proxytool.decoding.checks import quantization_fits
from proxytool.decoding.config import ONEDNN_PACK_MODES, LoadingOptions, ProxySetup
from proxytool.decoding.formats import PromptFormat
from proxytool.decoding.roles import ExpertPair, Member, ProxyModels
from proxytool.decoding.sources import Group, ModelSource, add_group
from proxytool.errors import ProxyToolError
from proxytool.models.checkpoint import read_calibration
from proxytool.models.loading import (
    QuantArgs,
    check_compatible,
    eos_ids_of,
    load_model,
    load_tokenizer,
    pick_device,
    same_vocabulary,
)
from proxytool.models.registry import ModelSpec, resolve

__all__ = ["LoadingOptions", "ProxySetup", "ResolvedSetup", "load_proxy_models", "resolve_roles"]


@dataclass
class _Host:
    """One model to load, and the adapters to put on it."""

    spec: ModelSpec
    quant: QuantArgs
    adapters: dict[str, ModelSpec] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)
    model: object = None
    source: ModelSource | None = None


@dataclass(frozen=True)
class ResolvedSetup:
    """A validated setup with every name resolved (nothing loaded yet)."""

    setup: ProxySetup
    base: ModelSpec
    pairs: tuple[tuple[float, ModelSpec, ModelSpec], ...]  # (alpha, expert, anti-expert)
    notes: tuple[str, ...] = ()  # one line each, for the user: where a default α came from


def resolve_roles(setup: ProxySetup) -> ResolvedSetup:
    """Validate, then resolve the base and each (alpha, expert, anti-expert); nothing loads.

    An expert's recorded base is its default anti-expert. Without ``alphas``, an expert's α is the one
    ``proxytool eval --alpha auto`` stored next to it for this base (``alpha.json``), else 1.0.
    """
    setup.validate()
    antis = list(setup.anti_experts) + [None] * (len(setup.experts) - len(setup.anti_experts))
    pairs, notes = [], []
    base = resolve(setup.base)
    for alpha, expert_name, anti_name in zip(setup.pair_alphas(), setup.experts, antis):
        expert = resolve(expert_name)
        if not setup.alphas and expert.kind != "remote" and Path(expert.source).is_dir():
            calibrated = read_calibration(expert.source, base.source)
            if calibrated is not None:
                alpha = float(calibrated["alpha"])
                notes.append(_calibration_note(expert_name, alpha, calibrated))
        if anti_name is not None:
            anti = resolve(anti_name)
        elif expert.base is not None:
            anti = expert.base
        else:
            raise ProxyToolError(
                f"expert '{expert_name}' does not record the model it was tuned from; pass --anti-expert"
            )
        pairs.append((alpha, expert, anti))
    return ResolvedSetup(setup, base, tuple(pairs), tuple(notes))


def _calibration_note(expert_name: str, alpha: float, record: dict) -> str:
    where = f"chosen on {record.get('task', '?')} ({record.get('n', '?')} questions)"
    line = f"alpha {alpha:g} for {expert_name}: {where}, from {record['path']} (--alpha overrides it)"
    if record.get("beats_base") is False:
        line += "; there steering did not beat the base alone"
    return line


def load_proxy_models(setup: ProxySetup | ResolvedSetup) -> ProxyModels:
    """Check tokenizers (before any weights load), load each model once, wire the roles.

    Takes a setup (validated and resolved here) or what :func:`resolve_roles` returned for it. A base
    whose tokenizer the pair does not share is steered across tokenizers (decoding/cross_tokenizer.py).
    """
    resolved = setup if isinstance(setup, ResolvedSetup) else resolve_roles(setup)
    base_spec, pair_specs, options = resolved.base, resolved.pairs, resolved.setup.loading
    remote = base_spec.kind == "remote"
    if remote and not pair_specs:
        raise ProxyToolError("a remote base (--base URL) needs a local --expert: the shared tokenizer comes from it")
    for _, expert, anti in pair_specs:
        if "remote" in (expert.kind, anti.kind):
            raise ProxyToolError("only the base may be remote; experts and anti-experts run locally")
    if options.pack_weights in ONEDNN_PACK_MODES and pick_device(options.device) != "cpu":
        raise ProxyToolError(
            f"--pack-weights {options.pack_weights} is for models on the CPU (use --device cpu, or --pack-weights auto)"
        )
    tokenizers = _Tokenizers()
    base_tokenizer, pair_tokenizer, cross = _match_tokenizers(resolved, tokenizers)
    hosts = _Hosts(options, tokenizers)
    base_place = None
    if not remote:
        base_quant = options.quantize_base if options.quantize_base != "none" else base_spec.quantization
        quantization_fits(base_spec, base_quant or "none", options.device)
        base_place = hosts.place(base_spec, "base", QuantArgs(base_quant or "none"), "base")
    pair_places = [
        (
            alpha,
            hosts.place(expert, "expert", QuantArgs(expert.quantization or "none"), f"expert{i}"),
            hosts.place(anti, "anti-expert", QuantArgs(anti.quantization or "none"), f"anti{i}"),
        )
        for i, (alpha, expert, anti) in enumerate(pair_specs, start=1)  # proxies: only their registry hint
    ]
    pair_hosts = {id(h) for _, e, n in pair_places for h, _ in (e, n)}
    for host in hosts.all():
        pad = (pair_tokenizer if cross and id(host) in pair_hosts else base_tokenizer).pad_token_id
        _load_host(host, options, pad if pad is not None else 0)
    base_eos = {i for h in hosts.all() if id(h) not in pair_hosts or not cross for i in hosts.eos(h)}
    pair_eos = {i for h in hosts.all() if id(h) in pair_hosts for i in hosts.eos(h)}
    if remote:
        base_eos = base_eos | (eos_ids_of(None, base_tokenizer) if cross else pair_eos)
        base = _remote_base(base_spec, options, base_tokenizer, len(base_eos), cross)
    else:
        base = Member(base_place[0].source, base_place[1])
    if cross and options.kv_cache == "static":
        raise ProxyToolError("--kv-cache static is not available across tokenizers (the pair branches its cache)")
    across = ("fast" if options.cross_tokenizer == "auto" else options.cross_tokenizer) if cross else None
    pairs = expert_pairs(
        pair_places, across, base_tokenizer, pair_tokenizer, pair_eos, base_eos, top_k=options.cross_top_k
    )
    models = ProxyModels(
        base=base, pairs=pairs, tokenizer=base_tokenizer, eos_ids=frozenset(base_eos), plausible=options.plausible
    )
    return dataclasses.replace(models, lanes=None if cross else _lanes(models, options.overlap))


class _Tokenizers:
    """Each model's tokenizer, loaded once."""

    def __init__(self):
        self._by_key: dict[tuple, object] = {}

    def of(self, spec: ModelSpec):
        if spec.key not in self._by_key:
            self._by_key[spec.key] = load_tokenizer(spec)
        return self._by_key[spec.key]


class _Hosts:
    """The models to load: each spec (and quantization) once, with the row groups its roles need."""

    def __init__(self, options: LoadingOptions, tokenizers: _Tokenizers):
        self.options, self.tokenizers = options, tokenizers
        self._hosts: dict[tuple, _Host] = {}
        device = pick_device(options.device)
        self.share = options.share_weights if options.share_weights is not None else device == "cpu"

    def place(self, spec: ModelSpec, role: str, quant: QuantArgs, adapter_name: str) -> tuple[_Host, int]:
        style = self.options.formats.get(role) or spec.prompt_format
        prompt_format = PromptFormat(self.tokenizers.of(spec), style)
        if spec.kind == "adapter" and self.share:
            host = self._hosts.setdefault((spec.base.key, quant), _Host(spec.base, quant))
            host.adapters[adapter_name] = spec
            group = Group(adapter_name, prompt_format)
        else:
            host = self._hosts.setdefault((spec.key, quant), _Host(spec, quant))
            group = Group(None, prompt_format)
        return host, add_group(host.groups, group)

    def all(self) -> list[_Host]:
        return list(self._hosts.values())

    def eos(self, host: _Host) -> set[int]:
        return eos_ids_of(host.model, self.tokenizers.of(host.spec))


def _match_tokenizers(resolved: ResolvedSetup, tokenizers: _Tokenizers) -> tuple[object, object, bool]:
    """(the base's tokenizer, the pair's, whether to steer across tokenizers); checked before any weights load.

    The experts and anti-experts must share one tokenizer. The base may differ unless
    ``--cross-tokenizer off``; ``fast`` or ``exact`` steer across tokenizers even when they are the same.
    """
    options = resolved.setup.loading
    pair = {}
    for i, (_, expert, anti) in enumerate(resolved.pairs, start=1):
        pair[f"expert {i} ({expert.name})"] = tokenizers.of(expert)
        pair[f"anti-expert {i} ({anti.name})"] = tokenizers.of(anti)
    try:
        check_compatible(pair) if pair else None
    except ProxyToolError as err:
        raise ProxyToolError(
            f"{err}; the experts and anti-experts must share one tokenizer (only the base may differ)"
        ) from None
    pair_tokenizer = next(iter(pair.values()), None)
    if resolved.base.kind != "remote":
        base_tokenizer = tokenizers.of(resolved.base)
    elif options.base_tokenizer is not None:
        base_tokenizer = tokenizers.of(resolve(options.base_tokenizer))
    else:  # the server's tokenizer is checked against the pair's when it connects
        return pair_tokenizer, pair_tokenizer, False
    if pair_tokenizer is None:
        return base_tokenizer, None, False
    mode = options.cross_tokenizer
    if mode == "off" or (mode == "auto" and same_vocabulary(base_tokenizer, pair_tokenizer)):
        try:
            check_compatible({"base": base_tokenizer, **pair})
        except ProxyToolError as err:
            raise ProxyToolError(f"{err} (--cross-tokenizer auto steers across tokenizers)") from None
        return base_tokenizer, base_tokenizer, False
    return base_tokenizer, pair_tokenizer, True


def expert_pairs(places, across: str | None, base_tokenizer, pair_tokenizer, pair_eos, base_eos, *, top_k: int):
    """The expert pairs from their placed members, ``(alpha, (host, group), (host, group))`` each; ``across``
    (``fast`` / ``exact``): the members become groups of one source that scores the base's candidates."""
    if across is None:
        return tuple(ExpertPair(a, Member(e[0].source, e[1]), Member(n[0].source, n[1])) for a, e, n in places)
    from proxytool.decoding.cross_tokenizer import CrossTokenizerSource

    members = [(host.source, group) for _, e, n in places for host, group in (e, n)]
    source = CrossTokenizerSource.between(
        members, base_tokenizer, pair_tokenizer, pair_eos, base_eos, mode=across, top_k=top_k
    )
    return tuple(
        ExpertPair(alpha, Member(source, 2 * i), Member(source, 2 * i + 1)) for i, (alpha, _, _) in enumerate(places)
    )


def _remote_base(spec: ModelSpec, options: LoadingOptions, tokenizer, n_eos: int, cross: bool = False) -> Member:
    """Connect to the server (its tokenizer checked against ``tokenizer``) as the base's source. Across
    tokenizers the pair cannot guess in the base's tokens nor name extra ids: the server's own path only."""
    from proxytool.decoding.remote import connect
    from proxytool.models.remote_client import RemoteClient, parse_endpoint

    client = RemoteClient(parse_endpoint(spec.source, options.base_api_key))
    prompt_format = PromptFormat(tokenizer, options.formats.get("base") or spec.prompt_format)
    source = connect(
        client,
        tokenizer,
        prompt_format,
        top_k=options.remote_top_k,
        lookahead=options.remote_lookahead,
        draft="base" if cross else options.remote_draft,
        extra=0 if cross else options.remote_extra,
        n_eos=n_eos,
    )
    return Member(source, 0)


def _lanes(models: ProxyModels, overlap: str):
    import torch

    from proxytool.decoding.overlap import Lanes, plan_lanes

    base = models.base.source
    if not base.local:  # a remote base: wait for the server while the proxies compute
        if overlap == "off":
            return None
        return Lanes([[base], [s for s in models.sources if s is not base]], [1, torch.get_num_threads()])
    on_cpu = base.device.type == "cpu"
    if overlap == "off" or (overlap == "auto" and not (on_cpu and torch.get_num_threads() >= 2)):
        return None
    others = [s for s in models.sources if s is not base]
    return plan_lanes(base, others, torch.get_num_threads(), measure=overlap == "auto")


def _load_host(host: _Host, options: LoadingOptions, pad_id: int) -> None:
    """Load the host's weights, attach its adapters (shared) or merge its own adapter (unshared)."""
    from proxytool.models.loading import attach_adapter
    from proxytool.models.packed import pack_as_asked

    model = load_model(
        host.spec, dtype=options.dtype, device=options.device, quant=host.quant, trust_pickle=options.trust_pickle
    )
    if host.spec.kind == "adapter":  # an expert loaded on its own: fold the adapter in for speed
        model = model.merge_and_unload()
    for name, adapter_spec in host.adapters.items():
        model = attach_adapter(model, adapter_spec, name)
    host.model = model.eval().requires_grad_(False)  # a merged expert's come back requiring grad: one more graph
    compiled = options.compile == "on" or (
        options.compile == "auto" and options.kv_cache == "static" and pick_device(options.device).startswith("cuda")
    )
    rows = options.expected_batch and options.expected_batch * len(host.groups)  # each role on the host: a row group
    pack_as_asked(host.model, options.pack_weights, compiled, rows)
    host.source = ModelSource(host.model, host.groups, pad_id=pad_id, kv_cache=options.kv_cache, compiled=compiled)
