"""``ProxyTuned``: a base model steered by expert pairs, the one way into proxy-tuned decoding from Python.

Built on the engine (decoding/): loading is :func:`proxytool.decoding.setup.load_proxy_models`, every
generation is :func:`proxytool.decoding.generate.generate`, scores come from a
:class:`proxytool.decoding.stepper.Stepper` (whose ``combine`` is the one home of the formula).
"""

import os
from collections.abc import Iterator, Sequence
from dataclasses import fields
from typing import overload

from proxytool.api.loaded import loaded_models
from proxytool.api.prompts import as_batch
from proxytool.api.results import Generation, NextTokenScores
from proxytool.decoding import checks
from proxytool.decoding.config import LoadingOptions, ProxySetup
from proxytool.decoding.formats import Prompt, TokenPrompt
from proxytool.decoding.roles import ProxyModels
from proxytool.errors import ProxyToolError

Messages = list[dict[str, str]]
OnePrompt = str | Messages | TokenPrompt
DEFAULT_BATCH = 8


class ProxyTuned:
    """A base model steered at decoding time: ``scores = base + Σ α (expert − anti_expert)``.

    Build one with :meth:`from_pretrained` (names, paths, hub ids, a server URL) or :meth:`from_models`
    (transformers models you already loaded). The loaded models are never changed by a call: each
    generation keeps its own KV caches and α, so calls may run concurrently over one ``ProxyTuned``.

    Example:
        >>> tuned = ProxyTuned.from_pretrained(base, expert=expert, anti_expert=anti, device="cpu")
        >>> tuned.alphas
        (1.0,)
        >>> result = tuned.generate("Who leads the poll?", max_new_tokens=4)
        >>> str(result) == result.text, len(result.token_ids), result.finish_reason
        (True, 4, 'length')
        >>> [r.finish_reason for r in tuned.generate(["Hello", "The poll"], max_new_tokens=3)]
        ['length', 'length']

    Attributes:
        models: the engine's loaded models (:class:`proxytool.decoding.roles.ProxyModels`), for
            anything the API does not wrap (decoding/to_file.py, scoring.py, a Stepper of your own).
    """

    def __init__(self, models: ProxyModels):
        self.models = models

    # --- building -------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        base: str | os.PathLike,
        expert: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        anti_expert: str | os.PathLike | Sequence[str | os.PathLike | None] | None = None,
        alpha: float | Sequence[float] | None = None,
        *,
        dtype: str = "auto",
        device: str = "auto",
        **loading_options,
    ) -> "ProxyTuned":
        """Load the base and the expert pairs by name: a registry name, a local folder or ``.gguf`` file,
        a hub id, or (the base only) an OpenAI-compatible server ``http(s)://HOST:PORT/v1[#MODEL]``.

        Args:
            base: the model M to steer.
            expert: the expert M+ (or several). A proxytool checkpoint or a PEFT adapter records the model
                it was tuned from, which is then the default anti-expert.
            anti_expert: the anti-expert M− of each expert (None: the expert's recorded base).
            alpha: the steering weight, one for every pair or one per pair (None: the α that
                ``proxytool eval --alpha auto`` stored with each expert for this base, else 1.0).
            dtype: ``auto`` (fp32 on CPU, bf16/fp16 on GPU), ``float32``, ``float16``, ``bfloat16``.
            device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
            **loading_options: the fields of :class:`proxytool.decoding.config.LoadingOptions`, as the
                CLI's flags name them (``quantize_base="4bit"``, ``expert_format="chat"``,
                ``share_weights=False``, ``remote_top_k=20``, ``cross_tokenizer="exact"``, ...).
                ``threads`` sets torch's thread count for the whole process; ``expected_batch`` (no flag)
                is the prompts decoded together, where ``pack_weights="auto"`` times the weight layout.

        A base whose tokenizer the pair does not share is steered across tokenizers (docs/cross_tokenizer.md).

        Raises:
            ProxyToolError: a bad value, an unknown model or option, tokenizers that cannot be paired.
        """
        experts = _names(expert)
        antis = _names(anti_expert) if anti_expert is not None else []
        alphas = [] if alpha is None else [float(a) for a in ([alpha] if isinstance(alpha, (int, float)) else alpha)]
        for value in alphas:
            checks.alpha("alpha", value)
        if not experts and alphas not in ([], [1.0]):
            raise ProxyToolError("alpha needs an expert to steer with")
        known = {f.name for f in fields(LoadingOptions)}
        unknown = sorted(set(loading_options) - known)
        if unknown:
            raise ProxyToolError(f"unknown loading option '{unknown[0]}' (known: {', '.join(sorted(known))})")
        loading = LoadingOptions(dtype=dtype, device=device, **loading_options)
        setup = ProxySetup(
            base=os.fspath(base), experts=experts, anti_experts=antis, alphas=alphas if experts else [], loading=loading
        )
        if loading.threads is not None:
            import torch

            checks.at_least("threads", loading.threads, 1, checks.MAX_THREADS)
            torch.set_num_threads(loading.threads)
        return cls.from_setup(setup)

    @classmethod
    def from_setup(cls, setup) -> "ProxyTuned":
        """Load what a :class:`proxytool.decoding.config.ProxySetup` (or a ``ResolvedSetup``) describes:
        the CLI's way in (its flags build the setup)."""
        from proxytool.decoding.setup import load_proxy_models

        checks.device_available(setup.setup.loading.device if hasattr(setup, "setup") else setup.loading.device)
        return cls(load_proxy_models(setup))

    # Over 60 lines: 45 of them are the docstring and its runnable example; the body is short.
    @classmethod
    def from_models(
        cls,
        base_model,
        tokenizer,
        expert_model=None,
        anti_expert_model=None,
        alpha: float = 1.0,
        *,
        pair_tokenizer=None,
        base_format: str = "raw",
        expert_format: str = "raw",
        anti_expert_format: str | None = None,
        cross_tokenizer: str = "fast",
        cross_top_k: int = 20,
    ) -> "ProxyTuned":
        """Steer transformers models you already loaded (they are put in eval mode, nothing else changes).

        Args:
            base_model: the model M to steer.
            tokenizer: the base's tokenizer (and the pair's, unless ``pair_tokenizer``).
            expert_model: the expert M+ (None: the base alone). A ``peft.PeftModel`` with no
                ``anti_expert_model`` is steered against its own base model with adapters off: one set
                of weights, both roles in one batched forward.
            anti_expert_model: the anti-expert M−. The same object as the base (or as the PEFT expert's
                base model) is run once per step for both roles.
            alpha: the steering weight.
            pair_tokenizer: the pair's tokenizer where it is not the base's: the pair then scores the
                base's top ``cross_top_k`` candidates as text (``cross_tokenizer`` ``fast`` or ``exact``,
                docs/cross_tokenizer.md).
            base_format, expert_format, anti_expert_format: ``raw`` (the text) or ``chat`` (the
                tokenizer's chat template) per role; the anti-expert's defaults to the expert's.

        Example:
            >>> from transformers import AutoModelForCausalLM, AutoTokenizer
            >>> tuned = ProxyTuned.from_models(
            ...     AutoModelForCausalLM.from_pretrained(base),
            ...     AutoTokenizer.from_pretrained(base),
            ...     expert_model=AutoModelForCausalLM.from_pretrained(expert),
            ...     anti_expert_model=AutoModelForCausalLM.from_pretrained(anti),
            ...     alpha=0.5,
            ... )
            >>> tuned.generate("The answer is", max_new_tokens=2).finish_reason
            'length'
        """
        formats = {
            "base": base_format,
            "expert": expert_format,
            "anti-expert": anti_expert_format if anti_expert_format is not None else expert_format,
        }
        if expert_model is None:
            if anti_expert_model is not None:
                raise ProxyToolError("anti_expert_model needs an expert_model to pair with")
            pairs = []
        else:
            pairs = [(alpha, expert_model, anti_expert_model)]
        models = loaded_models(
            base_model,
            tokenizer,
            pairs,
            pair_tokenizer=pair_tokenizer,
            formats=formats,
            cross_tokenizer=cross_tokenizer,
            cross_top_k=cross_top_k,
        )
        return cls(models)

    # --- what it holds ----------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        """The base's tokenizer (generated ids are the base's)."""
        return self.models.tokenizer

    @property
    def alphas(self) -> tuple[float, ...]:
        """The default steering weight of each pair (a call's ``alpha`` overrides it for that call)."""
        return self.models.alphas

    def __repr__(self) -> str:
        roles = ", ".join(self.models.roles())
        return f"ProxyTuned({roles}; alpha={list(self.alphas)})"

    # --- generating ---------------------------------------------------------------------------------------

    @overload
    def generate(self, prompts: OnePrompt, **options) -> Generation: ...

    @overload
    def generate(self, prompts: Sequence[OnePrompt], **options) -> list[Generation]: ...

    def generate(
        self,
        prompts,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop: str | Sequence[str] = (),
        seed: int = 0,
        alpha: float | Sequence[float] | None = None,
        batch_size: int = DEFAULT_BATCH,
        speculative: int | str = 0,
        draft: str = "expert",
    ):
        """Generate a completion per prompt.

        Args:
            prompts: one prompt (a string, one conversation as ``[{"role": …, "content": …}, …]``, or a
                :class:`proxytool.decoding.formats.TokenPrompt`) or a list of them. Each role sees the
                prompt in its own format (raw text, or its chat template).
            max_new_tokens: the most tokens per completion.
            temperature: 0 is greedy; otherwise sampling with ``top_k`` (0 = off) and ``top_p`` (1 = off).
            stop: a string (or several) that ends a completion; the text is cut where it begins.
            seed: sampling seed. Each prompt draws from its own generator seeded by (seed, its position
                in ``prompts``), so it samples the same tokens in any batch.
            alpha: this call's steering weight (one, or one per pair); default: :attr:`alphas`.
            batch_size: prompts decoded together (left-padded).
            speculative: draft this many tokens per round with the small models and verify them in one
                forward (same greedy tokens; docs/decoding.md); ``draft`` is ``expert`` or ``small-proxy``.
                ``"auto"``: greedy rounds plain or speculative, whichever measures faster on these
                models (same tokens); ``0`` (the default, measured faster on CPU): step by step.

        Returns:
            A :class:`Generation` for one prompt; a list of them, in order, for a list of prompts.

        Raises:
            ProxyToolError: a bad value or a prompt that does not fit a model's context (one line).
        """
        batch, single = as_batch(prompts)
        options = self._options(max_new_tokens, temperature, top_k, top_p, stop, seed, alpha)
        checks.at_least("batch_size", batch_size, 1, 100_000)
        self._check_speculative(speculative, draft)
        self._check_fits(batch, max_new_tokens)
        from proxytool.decoding.generate import complete

        results = []
        for start in range(0, len(batch), batch_size):
            part = batch[start : start + batch_size]
            done = complete(
                self.models,
                part,
                row_seeds=list(range(start, start + len(part))),
                speculative=speculative,
                draft=draft,
                **options,
            )
            results += [Generation(c.text, c.token_ids, c.finish_reason) for c in done]
        return results[0] if single else results

    def stream(
        self,
        prompt: OnePrompt,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop: str | Sequence[str] = (),
        seed: int = 0,
        alpha: float | Sequence[float] | None = None,
    ) -> Iterator[str]:
        """Yield one prompt's completion as it grows: the pieces join to :meth:`generate`'s text.

        A piece is held back while it may still become a stop string or ends in half a character.

        Example:
            >>> tuned = ProxyTuned.from_pretrained(base, expert=expert, anti_expert=anti, device="cpu")
            >>> pieces = list(tuned.stream("Hello", max_new_tokens=6))
            >>> "".join(pieces) == tuned.generate("Hello", max_new_tokens=6).text
            True
        """
        batch, single = as_batch(prompt)
        if not single:
            raise ProxyToolError("stream takes one prompt (a string or one list of messages)")
        options = self._options(max_new_tokens, temperature, top_k, top_p, stop, seed, alpha)
        self._check_fits(batch, max_new_tokens)
        from proxytool.decoding.generate import completion_of, generate, settled_text

        shown, rows = "", []
        for rows in generate(self.models, batch, row_seeds=[0], **options):
            text = settled_text(completion_of(rows[0], self.tokenizer).text, options["stop"])
            if text.startswith(shown) and len(text) > len(shown):
                yield text[len(shown) :]
                shown = text
        final = completion_of(rows[0], self.tokenizer).text if rows else ""
        if final.startswith(shown) and len(final) > len(shown):
            yield final[len(shown) :]

    def chat(
        self,
        system: str | None = None,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
    ):
        """A multi-turn conversation (:class:`proxytool.decoding.session.ChatSession`): ``reply(text)``
        streams the answer and records the turn; ``set_alpha``, ``reset``. What ``proxytool chat`` runs."""
        from proxytool.decoding.session import ChatSession

        checks.text("system", system)
        options = self._options(max_new_tokens, temperature, top_k, top_p, (), seed, None)
        return ChatSession(self.models, sampling=options["sampling"], max_new_tokens=max_new_tokens, system=system)

    def decode_to_file(self, items, output, options=None, *, on_tokens=None, run=None, tracer=None) -> int:
        """Decode prompts into a resumable JSONL file: what ``proxytool decode`` runs (decoding/to_file.py).

        Args:
            items: :class:`proxytool.decoding.formats.PromptItem` list (``proxytool.data.prompts.read_prompts``
                reads a prompts file into one).
            output: the JSONL file; an interrupted run resumes where it stopped, others are refused.
            options: a :class:`proxytool.decoding.to_file.DecodeOptions` (lengths, sampling, batch size).
            on_tokens: called with the number of tokens generated at each step (progress).
            run: the run's fingerprint (default: prompts and options); tracer: ``decode --trace``'s recorder.

        Returns:
            How many prompts were decoded now (the rest were already in the file).
        """
        from proxytool.decoding.to_file import DecodeOptions, decode_prompts

        options = options if options is not None else DecodeOptions()
        progress = on_tokens if on_tokens is not None else (lambda n: None)
        return decode_prompts(self.models, items, output, options, progress, run=run, tracer=tracer)

    # --- research -------------------------------------------------------------------------------------

    def next_token_scores(self, prompts, *, alpha: float | Sequence[float] | None = None) -> NextTokenScores:
        """The combined scores for the token after each prompt, and every role's logits.

        Example:
            >>> tuned = ProxyTuned.from_pretrained(base, expert=expert, anti_expert=anti, device="cpu")
            >>> out = tuned.next_token_scores(["The poll", "Hello"])
            >>> out.scores.shape[0], sorted(out.logits)
            (2, ['anti-expert', 'base', 'expert'])
            >>> best = out.scores.argmax(-1).tolist()
            >>> best == [g.token_ids[0] for g in tuned.generate(["The poll", "Hello"], max_new_tokens=1)]
            True
            >>> len(out.top(3)[0])
            3
        """
        from proxytool.decoding.stepper import Stepper

        batch, _ = as_batch(prompts)
        if not batch:
            raise ProxyToolError("next_token_scores needs at least one prompt")
        with Stepper(self.models, self._alphas(alpha)) as stepper:
            scores = stepper.prefill(batch)
            logits = stepper.role_logits()
        if not self.models.crosses_tokenizers:
            logits = {role: t[..., : scores.shape[-1]] for role, t in logits.items()}
        return NextTokenScores(scores=scores, logits=logits, tokenizer=self.tokenizer)

    # --- checks -------------------------------------------------------------------------------------

    def _options(self, max_new_tokens, temperature, top_k, top_p, stop, seed, alpha) -> dict:
        """The engine's keyword arguments for one call, every value checked (one-line errors)."""
        from proxytool.decoding.sampling import SamplingConfig

        checks.at_least("max_new_tokens", max_new_tokens, 0, 1_000_000)
        checks.finite("temperature", temperature, 0)
        checks.at_least("top_k", top_k, 0)
        checks.finite("top_p", top_p, 0, 1, open_low=True)
        checks.at_least("seed", seed, 0, checks.MAX_SEED)
        stops = (stop,) if isinstance(stop, str) else tuple(stop)
        for s in stops:
            if not isinstance(s, str) or not s:
                raise ProxyToolError(f"stop strings must be non-empty strings (got {s!r})")
            checks.text("stop", s)
        sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        return {
            "max_new_tokens": max_new_tokens,
            "sampling": sampling,
            "stop": stops,
            "alphas": self._alphas(alpha),
        }

    def _alphas(self, alpha) -> tuple[float, ...] | None:
        if alpha is None:
            return None
        values = (alpha,) * len(self.models.pairs) if isinstance(alpha, (int, float)) else tuple(alpha)
        if not self.models.pairs:
            raise ProxyToolError("alpha needs an expert to steer with (this ProxyTuned has none)")
        if len(values) != len(self.models.pairs):
            raise ProxyToolError(f"{len(values)} alpha values for {len(self.models.pairs)} expert pairs")
        for value in values:
            checks.alpha("alpha", value)
        return tuple(float(v) for v in values)

    def _check_speculative(self, speculative: int | str, draft: str) -> None:
        from proxytool.decoding.speculative import check_speculative, check_speculative_models, speculates

        check_speculative(speculative, draft, has_expert=bool(self.models.pairs))
        if speculates(speculative):
            check_speculative_models(self.models)

    def _check_fits(self, prompts: list[Prompt], max_new_tokens: int) -> None:
        """Every prompt, as each local model sees it, plus ``max_new_tokens`` fits that model's context."""
        from proxytool.decoding.sources import ModelSource

        roles = {id(m.source): name for name, m in reversed(self.models.roles().items())}
        for source in self.models.sources:
            limit = source.max_length if isinstance(source, ModelSource) else None
            if limit is None:
                continue
            for row, ids in enumerate(source.encode(prompts)):
                if len(ids) + max_new_tokens > limit:
                    i = row % len(prompts)
                    raise ProxyToolError(
                        f"prompt {i} is {len(ids)} tokens + max_new_tokens {max_new_tokens}, more than the "
                        f"{limit}-token context of the {roles[id(source)]}; shorten it or lower max_new_tokens"
                    )


def load_models(setup) -> ProxyModels:
    """The models of :meth:`ProxyTuned.from_setup` (its device check, then the engine's loading): the loader
    the CLI hands the library functions that take one (``evaluation.evaluate.run_prepared``,
    ``decoding.speed.run``), so every command loads through this API. Those sit below ``api`` and cannot
    import it; their default is the engine's ``load_proxy_models``."""
    return ProxyTuned.from_setup(setup).models


def _names(value) -> list[str]:
    """One name or path, or several, as strings (a ``Path`` is a name too)."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    return [os.fspath(v) if v is not None else None for v in value]
