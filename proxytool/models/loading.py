"""The one place models and tokenizers are loaded: device, dtype, bitsandbytes, tokenizer checks."""

import os
from dataclasses import dataclass
from pathlib import Path

from proxytool.errors import ProxyToolError
from proxytool.models.registry import DTYPE_ALIASES, DTYPES, ModelSpec

TOKENIZER_FILES = (  # what a tokenizer is saved as (a checkpoint copies them; an adapter with any has its own)
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)


@dataclass(frozen=True)
class QuantArgs:
    """bitsandbytes quantization, defined once for every command: "none", "4bit" (NF4) or "8bit"."""

    mode: str = "none"
    compute_dtype: str = "auto"

    def to_config(self, dtype):
        """The matching ``BitsAndBytesConfig`` (None for "none")."""
        if self.mode == "none":
            return None
        from transformers import BitsAndBytesConfig

        if self.mode == "8bit":
            return BitsAndBytesConfig(load_in_8bit=True)
        if self.mode == "4bit":
            return BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype,
            )
        raise ProxyToolError(f"--quantize must be one of none, 4bit, 8bit (got '{self.mode}')")


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str | None, device: str):
    """ "auto": fp32 on CPU (bf16 prefill is slow without native support), bf16/fp16 on GPU."""
    import torch

    if dtype in (None, "auto"):
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    name = DTYPE_ALIASES.get(dtype, dtype)
    if name not in DTYPES:
        raise ProxyToolError(f"--dtype must be one of {', '.join(DTYPES)} (got '{dtype}')")
    return getattr(torch, name)


def weights_folder(spec: ModelSpec) -> str:
    """Where ``from_pretrained`` finds the weights: GGUF files are converted once to a cached folder."""
    if spec.kind == "gguf":
        from proxytool.models.gguf import converted_folder

        return str(converted_folder(Path(spec.source)))
    if spec.kind == "adapter":
        return weights_folder(spec.base)
    return spec.source


def tokenizer_folder(spec: ModelSpec) -> str:
    """An adapter or checkpoint folder carries its own tokenizer; otherwise the weights' folder."""
    if spec.kind == "adapter" and any((Path(spec.source) / f).is_file() for f in TOKENIZER_FILES):
        return spec.source
    return weights_folder(spec)


def _loading_error(spec: ModelSpec, err: Exception) -> ProxyToolError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ProxyToolError(f"cannot load model '{spec.name}' from '{spec.source}': {first}")


def load_tokenizer(spec: ModelSpec):
    """Load the tokenizer of ``spec`` (fast, no weights). Left padding, a pad token always set."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(spec), revision=spec.revision)
    except ProxyToolError:
        raise
    except Exception as err:  # OSError offline, ValueError for bad folders, ...
        raise _loading_error(spec, err) from err
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_compatible(tokenizers: dict[str, object]) -> None:
    """All tokenizers must map tokens to the same ids (special tokens included); raise otherwise.

    Args:
        tokenizers: role label (e.g. "base", "expert 1") -> tokenizer.
    """
    labels = list(tokenizers)
    reference_label = labels[0]
    reference = tokenizers[reference_label].get_vocab()
    for label in labels[1:]:
        vocab = tokenizers[label].get_vocab()
        if vocab == reference:
            continue
        missing = sorted(set(reference) ^ set(vocab))
        if missing:
            token = missing[0]
            detail = f"token {token!r} is in only one of them ({len(missing)} such tokens)"
        else:
            token = next(t for t in sorted(reference) if reference[t] != vocab[t])
            detail = f"token {token!r} has id {reference[token]} in one and {vocab[token]} in the other"
        raise ProxyToolError(
            f"tokenizers of {reference_label} and {label} differ: {detail}; proxy-tuning needs one shared vocabulary"
        )


def same_vocabulary(a, b) -> bool:
    """Whether two tokenizers map every token to the same id (see :func:`check_compatible`)."""
    try:
        check_compatible({"a": a, "b": b})
    except ProxyToolError:
        return False
    return True


def eos_ids_of(model, tokenizer) -> set[int]:
    """The ids that end a generation: the model's generation config's and the tokenizer's EOS."""
    ids = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def load_model(
    spec: ModelSpec,
    dtype: str | None = "auto",
    device: str = "auto",
    quant: QuantArgs = QuantArgs(),
    adapter_name: str = "expert",
    trust_pickle: bool = False,
):
    """Load ``spec`` for inference (eval mode). An adapter spec loads its base plus the adapter.

    Weights load from safetensors only, unless ``trust_pickle`` (or PROXYTOOL_TRUST_PICKLE=1, or
    :func:`set_trust_pickle` for the whole process) allows pickled ``.bin`` files.

    Returns:
        The model; a ``peft.PeftModel`` for adapters, with the adapter under ``adapter_name``.
    """
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    torch_dtype = pick_dtype(dtype if dtype not in (None, "auto") else spec.dtype, device)
    kwargs = {"dtype": torch_dtype, "revision": spec.revision}
    quant_config = quant.to_config(torch_dtype)
    if quant_config is not None:
        kwargs["quantization_config"] = quant_config
        kwargs["device_map"] = {"": device}
    target = spec.base if spec.kind == "adapter" else spec
    folder = weights_folder(target)
    kwargs["use_safetensors"] = None if trust_pickle or trusts_pickle() else _require_safetensors(target, folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except ProxyToolError:
        raise
    except Exception as err:
        raise _loading_error(target, err) from err
    if quant_config is None:
        model.to(device)
    if spec.kind == "adapter":
        model = attach_adapter(model, spec, adapter_name)
    return model.eval()


_TRUST_PICKLE = [False]


def set_trust_pickle(trust: bool) -> None:
    """Allow pickled ``.bin`` weights for this process (``--trust-pickle``); safetensors only otherwise."""
    _TRUST_PICKLE[0] = bool(trust)


def trusts_pickle() -> bool:
    return _TRUST_PICKLE[0] or os.environ.get("PROXYTOOL_TRUST_PICKLE", "") not in ("", "0")


def _require_safetensors(spec: ModelSpec, folder: str) -> bool:
    """Weights load from safetensors only: a pickled ``.bin`` file can run code when it is loaded."""
    path = Path(folder)
    if path.is_dir() and not any(path.glob("*.safetensors")) and any(path.glob("*.bin")):
        raise ProxyToolError(
            f"model '{spec.name}' at {path} has only pickled .bin weights, which can run code when loaded; "
            "convert them to safetensors, or pass --trust-pickle if you trust their origin"
        )
    return True


def attach_adapter(model, spec: ModelSpec, adapter_name: str):
    """Put the adapter of ``spec`` on ``model`` (a plain model or an existing PeftModel)."""
    from peft import PeftModel

    try:
        if isinstance(model, PeftModel):
            model.load_adapter(spec.source, adapter_name=adapter_name)
            return model
        return PeftModel.from_pretrained(model, spec.source, adapter_name=adapter_name)
    except Exception as err:
        raise _loading_error(spec, err) from err
