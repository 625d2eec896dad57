import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

torch.set_num_threads(1)

from tiny import save_model  # noqa: E402


@pytest.fixture(autouse=True)
def proxytool_home(tmp_path, monkeypatch):
    """Every test gets its own registry and cache."""
    home = tmp_path / "proxytool_home"
    monkeypatch.setenv("PROXYTOOL_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Base, anti-expert and expert: tiny llama models sharing one tokenizer (expert logits padded)."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "base": save_model(root / "base", seed=1, hidden=48),
        "anti": save_model(root / "anti", seed=2),
        "expert": save_model(root / "expert", seed=3, vocab_size=336),  # padded vocabulary
        "gpt2": save_model(root / "gpt2", arch="gpt2", seed=4, chat=False),
    }


@pytest.fixture
def sigint_after_first_train_step(monkeypatch):
    """`proxytool train` gets one SIGINT (Ctrl-C) right after its first optimizer step, in every run
    until the returned ``disarm()`` is called."""
    import signal

    from proxytool.cli import train as train_cli

    original = train_cli.RichTrainProgress.step

    def step(self, number, stats):
        original(self, number, stats)
        if number == 1 and not getattr(self, "sent", False):
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train_cli.RichTrainProgress, "step", step)
    return lambda: monkeypatch.setattr(train_cli.RichTrainProgress, "step", original)


OPT_IN = {  # marker -> why it runs only when asked for (`pytest -m MARKER`)
    "scripts": "shell-script smoke runs take minutes",
    "lmeval": "needs the lmeval extra: pip install -e '.[lmeval]'",
    "launchers": "each starts 2 training processes (~20 s)",
}


def pytest_collection_modifyitems(config, items):
    """Tests marked with an OPT_IN marker are skipped unless ``-m`` names that marker."""
    asked = config.getoption("-m") or ""
    for marker, why in OPT_IN.items():
        if marker in asked:
            continue
        skip = pytest.mark.skip(reason=f"opt-in: run with -m {marker} ({why})")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)
