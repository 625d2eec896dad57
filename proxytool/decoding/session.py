"""Multi-turn proxy-tuned chat: history formatted per model, streamed replies."""

from collections.abc import Iterator
from dataclasses import dataclass, field

from proxytool.decoding.formats import RAW_USER
from proxytool.decoding.generate import ProxyModels, completion_of, generate, settled_text
from proxytool.decoding.sampling import SamplingConfig


@dataclass
class ChatSession:
    """A conversation with proxy-tuned models. ``reply`` streams text and records the turn."""

    models: ProxyModels
    sampling: SamplingConfig = SamplingConfig()
    max_new_tokens: int = 256
    system: str | None = None
    stop: tuple[str, ...] = (f"\n{RAW_USER}",)  # raw-prompted models would write the user's next turn
    history: list[dict] = field(default_factory=list)
    turn: int = 0
    alphas: tuple[float, ...] | None = None  # this conversation's steering weights (default: the models')

    def reset(self) -> None:
        self.history.clear()

    def set_alpha(self, alpha: float) -> None:
        """Steer every pair with ``alpha`` from the next reply on (the loaded models are not touched)."""
        self.alphas = (alpha,) * len(self.models.pairs)

    def messages(self, user_message: str) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history + [{"role": "user", "content": user_message}]

    def reply(self, user_message: str) -> Iterator[str]:
        """Yield the reply's text as it grows (new text per step); then add the turn to the history."""
        prompt = self.messages(user_message)
        shown, rows = "", []
        for rows in generate(
            self.models,
            [prompt],
            max_new_tokens=self.max_new_tokens,
            sampling=self.sampling,
            stop=self.stop,
            row_seeds=[self.turn],
            alphas=self.alphas,
        ):
            text = settled_text(completion_of(rows[0], self.models.tokenizer).text, self.stop)
            if text.startswith(shown) and len(text) > len(shown):
                yield text[len(shown) :]
                shown = text
        final = completion_of(rows[0], self.models.tokenizer).text if rows else ""
        if final.startswith(shown) and len(final) > len(shown):
            yield final[len(shown) :]
        self.turn += 1
        self.history += [{"role": "user", "content": user_message}, {"role": "assistant", "content": final.strip()}]
