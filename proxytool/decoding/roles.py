"""What a proxy setup is made of once loaded: the base, the expert pairs, the shared tokenizer.

These objects are immutable and shared: any number of generations may run over them at once, each
with its own :class:`proxytool.decoding.stepper.Stepper` (KV caches, α values).
"""

import dataclasses
from dataclasses import dataclass

from proxytool.decoding.overlap import Lanes
from proxytool.decoding.sources import Source
from proxytool.decoding.way_timings import WayTimings


@dataclass(frozen=True)
class Member:
    """Where one role's logits come from: a source and one of its row groups."""

    source: Source
    group: int


@dataclass(frozen=True)
class ExpertPair:
    """An expert and its anti-expert, steering with weight ``alpha`` unless a generation overrides it."""

    alpha: float
    expert: Member
    anti_expert: Member


@dataclass(frozen=True)
class ProxyModels:
    """Everything loaded for proxy-tuned decoding. Without pairs it decodes the base alone."""

    base: Member
    pairs: tuple[ExpertPair, ...]
    tokenizer: object  # decodes generated ids to text (all roles share one vocabulary)
    eos_ids: frozenset[int]
    lanes: Lanes | None = None  # run the base and the proxies concurrently (see overlap.py)
    plausible: float = 0.0  # steer only among tokens the base or an expert finds plausible (combine.py); 0 = off
    speculation: WayTimings = dataclasses.field(default_factory=WayTimings, compare=False, repr=False)

    @property
    def sources(self) -> list[Source]:
        members = [self.base] + [m for p in self.pairs for m in (p.expert, p.anti_expert)]
        unique = []
        for member in members:
            if all(member.source is not s for s in unique):
                unique.append(member.source)
        return unique

    @property
    def crosses_tokenizers(self) -> bool:
        """Whether the pairs score the base's candidates across tokenizers (decoding/cross_tokenizer.py)."""
        return any(s.base_candidates > 0 for s in self.sources)

    @property
    def alphas(self) -> tuple[float, ...]:
        return tuple(p.alpha for p in self.pairs)

    def roles(self) -> dict[str, Member]:
        """Every role by name: ``base``, then ``expert``/``anti-expert`` (numbered when several pairs)."""
        roles = {"base": self.base}
        for i, pair in enumerate(self.pairs, start=1):
            suffix = "" if len(self.pairs) == 1 else str(i)
            roles[f"expert{suffix}"] = pair.expert
            roles[f"anti-expert{suffix}"] = pair.anti_expert
        return roles

    def with_base(self, base: Member) -> "ProxyModels":
        """One role alone (no pairs): e.g. the expert as a model of its own (in its own tokens where the
        pair does not share the base's tokenizer)."""
        own = base.source.standalone(base.group)
        if own is not None:
            return ProxyModels(
                base=Member(own.source, own.group), pairs=(), tokenizer=own.tokenizer, eos_ids=own.eos_ids
            )
        return dataclasses.replace(self, base=base, pairs=())

    def with_alphas(self, alphas) -> "ProxyModels":
        """The same loaded models steering with other weights (one per pair)."""
        pairs = tuple(ExpertPair(a, p.expert, p.anti_expert) for a, p in zip(alphas, self.pairs, strict=True))
        return dataclasses.replace(self, pairs=pairs)

    def with_plausible(self, plausible: float) -> "ProxyModels":
        """The same loaded models with another plausibility filter (see combine.plausible_mask; 0 = off)."""
        return dataclasses.replace(self, plausible=plausible)
