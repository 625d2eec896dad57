"""Resolve, check and load the models of a proxy-tuning run, sharing weights wherever possible.

A LoRA expert whose anti-expert is its own base model is loaded once (by default on CPU): the
anti-expert is the PeftModel with adapters off, and both run as row groups of one batched forward.
On CUDA the expert is merged into its own copy instead, because PEFT's mixed-adapter batch is slower
there (docs/performance.md). Any model asked for twice (same weights, same quantization) is loaded once.
"""

import dataclasses
from dataclasses import dataclass, field

from proxytool.decoding.checks import quantization_fits
from proxytool.decoding.config import LoadingOptions, ProxySetup
from proxytool.decoding.formats import PromptFormat
from proxytool.decoding.roles import ExpertPair, Member, ProxyModels
from proxytool.decoding.sources import Group, ModelSource
from proxytool.errors import ProxyToolError
from proxytool.models.loading import (
    QuantArgs,
    check_compatible,
    load_model,
    load_tokenizer,
    pick_device,
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


def resolve_roles(setup: ProxySetup) -> ResolvedSetup:
    """Validate, then resolve the base and each (alpha, expert, anti-expert); nothing loads.

    An expert's recorded base is its default anti-expert.
    """
    setup.validate()
    antis = list(setup.anti_experts) + [None] * (len(setup.experts) - len(setup.anti_experts))
    pairs = []
    for alpha, expert_name, anti_name in zip(setup.pair_alphas(), setup.experts, antis):
        expert = resolve(expert_name)
        if anti_name is not None:
            anti = resolve(anti_name)
        elif expert.base is not None:
            anti = expert.base
        else:
            raise ProxyToolError(
                f"expert '{expert_name}' does not record the model it was tuned from; pass --anti-expert"
            )
        pairs.append((alpha, expert, anti))
    return ResolvedSetup(setup, resolve(setup.base), tuple(pairs))


def load_proxy_models(setup: ProxySetup | ResolvedSetup) -> ProxyModels:
    """Check tokenizers (before any weights load), load each model once, wire the roles.

    Takes a setup (validated and resolved here) or what :func:`resolve_roles` returned for it.
    """
    resolved = setup if isinstance(setup, ResolvedSetup) else resolve_roles(setup)
    base_spec, pair_specs, setup = resolved.base, resolved.pairs, resolved.setup
    options = setup.loading
    tokenizers: dict[tuple, object] = {}

    def tokenizer_of(spec: ModelSpec):
        if spec.key not in tokenizers:
            tokenizers[spec.key] = load_tokenizer(spec)
        return tokenizers[spec.key]

    remote = base_spec.kind == "remote"
    if remote and not pair_specs:
        raise ProxyToolError("a remote base (--base URL) needs a local --expert: the shared tokenizer comes from it")
    for _, expert, anti in pair_specs:
        if "remote" in (expert.kind, anti.kind):
            raise ProxyToolError("only the base may be remote; experts and anti-experts run locally")
    labelled = {} if remote else {"base": tokenizer_of(base_spec)}
    for i, (_, expert, anti) in enumerate(pair_specs, start=1):
        labelled[f"expert {i} ({expert.name})"] = tokenizer_of(expert)
        labelled[f"anti-expert {i} ({anti.name})"] = tokenizer_of(anti)
    check_compatible(labelled)
    tokenizer = next(iter(labelled.values()))

    hosts: dict[tuple, _Host] = {}
    pad_id = tokenizer.pad_token_id
    share = options.share_weights if options.share_weights is not None else pick_device(options.device) == "cpu"

    def place(spec: ModelSpec, role: str, quant: QuantArgs, adapter_name: str) -> tuple[_Host, int]:
        style = options.formats.get(role) or spec.prompt_format
        prompt_format = PromptFormat(tokenizer_of(spec), style)
        if spec.kind == "adapter" and share:
            host = hosts.setdefault((spec.base.key, quant), _Host(spec.base, quant))
            host.adapters[adapter_name] = spec
            group = Group(adapter_name, prompt_format)
        else:
            host = hosts.setdefault((spec.key, quant), _Host(spec, quant))
            group = Group(None, prompt_format)
        return host, _add_group(host, group)

    if remote:
        base_place = None
    else:
        base_quant = options.quantize_base if options.quantize_base != "none" else base_spec.quantization
        quantization_fits(base_spec, base_quant or "none", options.device)
        base_place = place(base_spec, "base", QuantArgs(base_quant or "none"), "base")
    pair_places = []
    for i, (alpha, expert, anti) in enumerate(pair_specs, start=1):  # proxies: only their registry hint
        pair_places.append(
            (
                alpha,
                place(expert, "expert", QuantArgs(expert.quantization or "none"), f"expert{i}"),
                place(anti, "anti-expert", QuantArgs(anti.quantization or "none"), f"anti{i}"),
            )
        )

    for host in hosts.values():
        _load_host(host, options, pad_id)

    def member(placed) -> Member:
        host, group = placed
        return Member(host.source, group)

    eos = set()
    for host in hosts.values():
        eos |= _eos_ids(host.model, tokenizer_of(host.spec))
    base = _remote_base(base_spec, options, tokenizer, len(eos)) if remote else member(base_place)
    models = ProxyModels(
        base=base,
        pairs=tuple(ExpertPair(a, member(e), member(n)) for a, e, n in pair_places),
        tokenizer=tokenizer,
        eos_ids=frozenset(eos),
    )
    return dataclasses.replace(models, lanes=_lanes(models, options.overlap))


def _remote_base(spec: ModelSpec, options: LoadingOptions, tokenizer, n_eos: int) -> Member:
    """Connect to the server (its tokenizer checked against the shared one) as the base's source."""
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
        draft=options.remote_draft,
        extra=options.remote_extra,
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
    return plan_lanes(base, [s for s in models.sources if s is not base], torch.get_num_threads())


def _add_group(host: _Host, group: Group) -> int:
    for i, existing in enumerate(host.groups):
        if existing.adapter == group.adapter and existing.prompt_format.same_as(group.prompt_format):
            return i
    host.groups.append(group)
    return len(host.groups) - 1


def _load_host(host: _Host, options: LoadingOptions, pad_id: int) -> None:
    """Load the host's weights, attach its adapters (shared) or merge its own adapter (unshared)."""
    from proxytool.models.loading import attach_adapter

    model = load_model(
        host.spec, dtype=options.dtype, device=options.device, quant=host.quant, trust_pickle=options.trust_pickle
    )
    if host.spec.kind == "adapter":  # an expert loaded on its own: fold the adapter in for speed
        model = model.merge_and_unload()
    for name, adapter_spec in host.adapters.items():
        model = attach_adapter(model, adapter_spec, name)
    host.model = model.eval()
    host.source = ModelSource(host.model, host.groups, pad_id=pad_id)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
