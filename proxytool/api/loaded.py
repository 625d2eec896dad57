"""Already-loaded transformers models wired into the engine's roles (``ProxyTuned.from_models``).

The same sharing as loading by name (decoding/setup.py): a model given in two roles runs once per step,
and a PEFT expert whose base model is the anti-expert is one model with two row groups: the expert
rows with its adapter, the anti-expert rows with adapters off (``"__base__"``).
"""

from dataclasses import dataclass, field

from proxytool.decoding.checks import alpha as check_alpha
from proxytool.decoding.checks import one_of
from proxytool.decoding.formats import PromptFormat
from proxytool.decoding.roles import Member, ProxyModels
from proxytool.decoding.setup import expert_pairs
from proxytool.decoding.sources import Group, ModelSource, add_group
from proxytool.errors import ProxyToolError
from proxytool.models.loading import eos_ids_of, same_vocabulary
from proxytool.models.registry import PROMPT_FORMATS


@dataclass
class _Host:
    """One loaded model and the row groups its roles run as."""

    model: object
    pad_id: int
    groups: list[Group] = field(default_factory=list)
    source: ModelSource | None = None

    def group(self, adapter: str | None, prompt_format: PromptFormat) -> int:
        return add_group(self.groups, Group(adapter, prompt_format))


class _Hosts:
    """Each given model object once; the base model of a PEFT expert is that PeftModel with adapters off."""

    def __init__(self):
        self.hosts: dict[int, _Host] = {}
        self.peft_bases: dict[int, object] = {}  # id(inner model) -> the PeftModel that wraps it

    def add_peft(self, model) -> None:
        if _is_peft(model):
            self.peft_bases[id(model.get_base_model())] = model

    def place(self, model, adapter: str | None, prompt_format: PromptFormat, pad_id: int) -> tuple[_Host, int]:
        if id(model) in self.peft_bases:  # the PEFT expert's own base: its adapters change it, so turn them off
            model, adapter = self.peft_bases[id(model)], None
        host = self.hosts.setdefault(id(model), _Host(model, pad_id))
        return host, host.group(adapter, prompt_format)

    def sources(self) -> None:
        for host in self.hosts.values():
            host.model.eval()
            host.source = ModelSource(host.model, host.groups, pad_id=host.pad_id)


def loaded_models(
    base_model,
    tokenizer,
    pairs: list[tuple[float, object, object | None]],
    *,
    pair_tokenizer=None,
    formats: dict[str, str] | None = None,
    cross_tokenizer: str = "fast",
    cross_top_k: int = 20,
) -> ProxyModels:
    """:class:`ProxyModels` over loaded models: the base, then ``(alpha, expert, anti_expert)`` per pair.

    ``anti_expert`` None: the expert must be a PEFT model; its base model with adapters off is the
    anti-expert. ``pair_tokenizer`` (when the pair's tokenizer is not the base's) steers across
    tokenizers (docs/cross_tokenizer.md).
    """
    formats = {"base": "raw", "expert": "raw", "anti-expert": "raw", **(formats or {})}
    for role, style in formats.items():
        one_of(f"{role.replace('-', '_')}_format", style, PROMPT_FORMATS)
    one_of("cross_tokenizer", cross_tokenizer, ("fast", "exact"))
    if tokenizer is None:
        raise ProxyToolError("from_models needs the base's tokenizer")
    pair_tokenizer = pair_tokenizer if pair_tokenizer is not None else tokenizer
    cross = pair_tokenizer is not tokenizer and not same_vocabulary(tokenizer, pair_tokenizer)
    hosts = _Hosts()
    for _, expert, _ in pairs:
        hosts.add_peft(expert)
    base_place = hosts.place(base_model, None, PromptFormat(tokenizer, formats["base"]), _pad(tokenizer))
    places = []
    for i, (weight, expert, anti) in enumerate(pairs, start=1):
        check_alpha("alpha", weight)
        if anti is None and not _is_peft(expert):
            raise ProxyToolError(
                f"expert {i} is not a PEFT model, so it has no base model to stand as the anti-expert: "
                "pass anti_expert_model"
            )
        adapter = _active_adapter(expert)
        e = hosts.place(expert, adapter, PromptFormat(pair_tokenizer, formats["expert"]), _pad(pair_tokenizer))
        anti_format = PromptFormat(pair_tokenizer, formats["anti-expert"])
        a = hosts.place(expert.get_base_model() if anti is None else anti, None, anti_format, _pad(pair_tokenizer))
        places.append((weight, e, a))
    if cross and any(h is base_place[0] for _, e, a in places for h, _ in (e, a)):
        raise ProxyToolError("the base model cannot also be an expert or anti-expert across tokenizers")
    hosts.sources()
    pair_hosts = {id(h) for _, e, a in places for h, _ in (e, a)}
    pair_eos = {i for h in hosts.hosts.values() if id(h) in pair_hosts for i in eos_ids_of(h.model, pair_tokenizer)}
    base_eos = eos_ids_of(base_model, tokenizer) | (set() if cross else pair_eos)
    base = Member(base_place[0].source, base_place[1])
    across = cross_tokenizer if cross else None
    steered = expert_pairs(places, across, tokenizer, pair_tokenizer, pair_eos, base_eos, top_k=cross_top_k)
    return ProxyModels(base=base, pairs=steered, tokenizer=tokenizer, eos_ids=frozenset(base_eos))


def pair_models(tokenizer, expert, anti_expert, alpha: float) -> ProxyModels:
    """The pair alone, for :class:`proxytool.ProxyLogitsProcessor`: its ``pairs`` are what it steers with
    (its base is the anti-expert, never run by the processor)."""
    anti = anti_expert if anti_expert is not None else (expert.get_base_model() if _is_peft(expert) else None)
    if anti is None:
        raise ProxyToolError(
            "the expert is not a PEFT model, so it has no base model to stand as the anti-expert: pass anti_expert"
        )
    return loaded_models(anti, tokenizer, [(alpha, expert, anti_expert)])


def _is_peft(model) -> bool:
    return callable(getattr(model, "get_base_model", None)) and hasattr(model, "peft_config")


def _active_adapter(model) -> str | None:
    if not _is_peft(model):
        return None
    active = model.active_adapter
    return active if isinstance(active, str) else active[0]


def _pad(tokenizer) -> int:
    for token in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token is not None:
            return token
    return 0
