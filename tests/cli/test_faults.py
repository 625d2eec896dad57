"""Faults: disk full, Ctrl-C (once, twice), kill, resumes under other settings, diverging training,
and the machine-readable outputs scripts rely on (--json, exit codes, no colour when piped)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import run_cli
from tiny import CORPUS

import proxytool.decoding.to_file as to_file
from proxytool.models.checkpoint import read_metadata
from proxytool.training import checkpoints
from proxytool.training.train import resolve_config, train


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def prompts(tmp_path):
    return write_jsonl(tmp_path / "p.jsonl", [{"id": f"q{i}", "prompt": f"Poll number {i} says"} for i in range(6)])


def decode_args(tiny_models, prompts, output, *extra):
    return [
        "decode", "--prompts", prompts, "--output", output, "--base", tiny_models["base"],
        "--expert", tiny_models["expert"], "--anti-expert", tiny_models["anti"],
        "--max-new-tokens", "5", "--threads", "1", "--batch-size", "2", *extra,
    ]  # fmt: skip


def one_line(err: str) -> str:
    """The error: the last line of stderr (progress bars may come before it), and no traceback."""
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error:") and "Traceback" not in err, err
    return lines[-1]


def test_disk_full_keeps_whole_lines_and_resumes_after_space_is_freed(tiny_models, prompts, tmp_path, monkeypatch):
    whole = tmp_path / "whole.jsonl"
    assert run_cli(*decode_args(tiny_models, prompts, whole))[0] == 0

    out = tmp_path / "out.jsonl"
    real_write, calls = os.write, []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) == 2:  # the second batch: half of it lands, then the disk is full
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(to_file.os, "write", write)
    code, _, err = run_cli(*decode_args(tiny_models, prompts, out))
    assert code == 1 and "No space left on device" in one_line(err) and "out.jsonl.part" in err
    part = Path(str(out) + ".part")
    assert not out.exists() and part.read_bytes() == whole.read_bytes()[: len(part.read_bytes())]
    assert part.read_text().count("\n") == 2 and part.read_bytes().endswith(b"\n")  # only the first batch

    # Resuming under another alpha would mix two settings in one file: refused, nothing touched.
    before = part.read_bytes()
    code, _, err = run_cli(*decode_args(tiny_models, prompts, out, "--alpha", "0.5"))
    assert code == 2 and "alpha 1.0 -> 0.5" in one_line(err) and part.read_bytes() == before

    monkeypatch.setattr(to_file.os, "write", real_write)  # space freed
    code, _, err = run_cli(*decode_args(tiny_models, prompts, out))
    assert code == 0, err
    assert out.read_bytes() == whole.read_bytes() and not part.exists()


def test_a_finished_output_is_kept_only_for_the_same_settings(tiny_models, prompts, tmp_path):
    out = tmp_path / "out.jsonl"
    assert run_cli(*decode_args(tiny_models, prompts, out))[0] == 0
    first = out.read_bytes()
    code, _, err = run_cli(*decode_args(tiny_models, prompts, out, "--seed", "7", "--temperature", "0.5"))
    assert code == 2 and "other settings" in one_line(err) and "seed 0 -> 7" in err
    other = write_jsonl(tmp_path / "other.jsonl", [{"id": "q0", "prompt": "Something else"}])
    code, _, err = run_cli(*decode_args(tiny_models, other, out))
    assert code == 2 and "the prompts" in one_line(err)
    code, _, err = run_cli(*decode_args(tiny_models, prompts, out, "--base-format", "chat"))
    assert code == 2 and "formats" in one_line(err)
    assert out.read_bytes() == first
    for same in ("0", "3"):  # greedy lines do not depend on speculation: the finished file stands
        code, _, err = run_cli(*decode_args(tiny_models, prompts, out, "--speculative", same))
        assert code == 0 and "already complete" in err, err

    out.write_bytes(first.replace(b'"q0"', b'"q0 "'))  # the user edited the finished file
    edited = out.read_bytes()
    code, _, err = run_cli(*decode_args(tiny_models, prompts, out))
    assert code == 2 and "changed since proxytool wrote it" in one_line(err) and out.read_bytes() == edited


def test_pickled_weights_need_trust_pickle(tiny_models, prompts, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_models["base"], folder)
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    args = ["decode", "--prompts", prompts, "--base", folder, "--max-new-tokens", "2", "--threads", "1"]
    code, _, err = run_cli(*args, "--output", tmp_path / "a.jsonl")
    assert code == 2 and "pickled .bin weights" in one_line(err) and not (tmp_path / "a.jsonl.part").exists()
    code, _, err = run_cli(*args, "--output", tmp_path / "b.jsonl", "--trust-pickle")
    assert code == 0, err


def default_ctrl_c() -> None:
    """In the child: SIGINT raises KeyboardInterrupt again (a shell's background job, such as a suite started
    with `nohup … &`, passes SIGINT on ignored, and Python then keeps ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_decode_exits_130_and_the_part_resumes(tiny_models, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": str(i), "prompt": f"Poll {i}"} for i in range(60)])
    out = tmp_path / "out.jsonl"
    part = Path(str(out) + ".part")
    args = [str(a) for a in decode_args(tiny_models, prompts, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "proxytool", *args]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, preexec_fn=default_ctrl_c)
    deadline = time.time() + 120
    while time.time() < deadline and (not part.exists() or part.read_text().count("\n") < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    assert part.read_bytes().endswith(b"\n") and not out.exists()
    done = part.read_text().count("\n")
    code, _, err = run_cli(*args)
    assert code == 0 and f"{60 - done} decoded now" in err


def test_second_ctrl_c_while_saving_waits_for_a_complete_checkpoint(tmp_path, monkeypatch):
    import proxytool.training.train as train_module

    class Trainer:
        class state:
            global_step = 3

        class args:
            should_save = True

        class accelerator:
            @staticmethod
            def wait_for_everyone():
                pass

        def _get_output_dir(self, trial=None):
            return str(tmp_path)

        def _save_checkpoint(self, model, trial):
            folder = tmp_path / "checkpoint-3"
            folder.mkdir()
            (folder / "trainer_state.json").write_text("{}")
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C lands in the middle of the save
            (folder / "optimizer.pt").write_bytes(b"state")

    class Callback:
        stop_requested = True  # the first Ctrl-C already asked to stop

    class Progress:
        notes = []

        def note(self, message):
            self.notes.append(message)

    trainer = Trainer()
    guard = checkpoints.SaveGuard(trainer)
    with pytest.raises(KeyboardInterrupt):
        with train_module._stop_on_ctrl_c(Callback(), Progress(), guard):
            trainer._save_checkpoint(None, None)
    assert (tmp_path / "checkpoint-3" / "optimizer.pt").exists()
    assert checkpoints.last_complete(tmp_path) == tmp_path / "checkpoint-3"
    assert "once the checkpoint being saved is complete" in Progress.notes[0]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", [{"text": t} for t in CORPUS])


def quick_train(base, data, output, resume=False, **flags):
    values = dict(model=str(base), data=str(data), output=str(output), max_steps=3, batch_size=4, lr=1e-2, threads=1)
    config, sources = resolve_config(
        None, {**values, **flags} if not resume else {"output": str(output)}, resume=resume
    )
    return train(config, sources=sources, resume=resume)


def test_resume_skips_an_incomplete_checkpoint_and_a_never_saved_run_starts_again(tiny_models, data_file, tmp_path):
    output = tmp_path / "run"
    # Killed before its first save: only trainer/run.json and a log line. Starting again just works.
    checkpoints.write_run_file(output, {"model": "x"}, "sha")
    (output / checkpoints.LOG_FILE).write_text('{"step": 1}\n')
    assert quick_train(tiny_models["base"], data_file, output, save_steps=1, save_total_limit=3).global_step == 3
    trainer_dir = output / "trainer"
    assert checkpoints.last_complete(trainer_dir) == trainer_dir / "checkpoint-3"
    (output / "proxytool.json").unlink()  # pretend the run was stopped at step 3 ...
    (trainer_dir / "checkpoint-3" / checkpoints.MARKER).unlink()  # ... and killed while saving checkpoint 3
    result = quick_train(tiny_models["base"], data_file, output, resume=True)
    assert result.global_step == 3 and read_metadata(output) is not None
    assert checkpoints.is_complete(trainer_dir / "checkpoint-3")  # saved again, completely


def test_ctrl_c_during_train_exits_130_through_the_entry_point(
    tiny_models, data_file, tmp_path, sigint_after_first_train_step
):
    output = tmp_path / "run"
    code, _, err = run_cli(
        "train", "--model", tiny_models["base"], "--data", data_file, "--output", output, "--max-steps", "3",
        "--threads", "1",
    )  # fmt: skip
    assert code == 130 and "resume with: proxytool train --resume" in err and "Traceback" not in err


def test_diverging_training_stops_with_exit_1_and_registers_nothing(tiny_models, data_file, tmp_path):
    output = tmp_path / "run"
    code, _, err = run_cli(
        "train", "--model", tiny_models["base"], "--data", data_file, "--output", output, "--lr", "1e30",
        "--max-steps", "3", "--threads", "1", "--name", "diverged",
    )  # fmt: skip
    assert code == 1 and "training diverged" in one_line(err)
    assert not (output / "proxytool.json").exists() and not (output / "adapter_model.safetensors").exists()
    assert "diverged" not in run_cli("models", "list", "--json")[1]


def test_json_outputs_are_one_object_on_stdout(tiny_models, tmp_path):
    assert run_cli("models", "add", "tiny", tiny_models["base"])[0] == 0
    code, out, err = run_cli("models", "add", "tiny", tiny_models["anti"])
    assert code == 0 and out.startswith("replaced tiny")
    for args in (["models", "list", "--json"], ["models", "show", "tiny", "--json"], ["env", "--json"]):
        code, out, _ = run_cli(*args)
        assert code == 0 and out.count("\n") == 1 and isinstance(json.loads(out), dict), args
    assert json.loads(run_cli("models", "list", "--json")[1])["models"]["tiny"]["source"] == str(tiny_models["anti"])


def test_piped_tables_have_no_colour_and_are_not_cut(tiny_models, tmp_path):
    deep = tmp_path / ("a-very-long-folder-name-" * 6)
    deep.mkdir()
    os.symlink(tiny_models["base"], deep / "model")
    assert run_cli("models", "add", "long", deep / "model")[0] == 0
    code, out, _ = run_cli("models", "list", "--user")
    assert code == 0 and "\x1b[" not in out and str(deep) in out


def test_eval_json(tiny_models, tmp_path):
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Who leads?", "answer": "Trump"}])
    code, out, err = run_cli(
        "eval", "--task", qa, "--base", tiny_models["base"], "--expert", tiny_models["expert"],
        "--anti-expert", tiny_models["anti"], "--max-new-tokens", "2", "--threads", "1", "--json",
        "--output", tmp_path / "eval",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert out.count("\n") == 1 and report["folder"] == str(tmp_path / "eval")


def test_sandbox_has_no_network_when_namespaces_are_available():
    from proxytool.evaluation import sandbox

    if sandbox.isolation() == "none":
        pytest.skip("no bwrap or user namespaces here")
    program = "import socket\nassert [n for _, n in socket.if_nameindex()] == ['lo'], socket.if_nameindex()\n"
    assert sandbox.run_python(program, timeout=20) == (True, "passed")
