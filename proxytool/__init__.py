"""proxytool: proxy-tuning end to end (Liu et al., 2024, arXiv 2401.08565).

From Python (docs/python.md)::

    from proxytool import ProxyTuned, ProxyLogitsProcessor

The names below load on first use, so ``import proxytool`` (and ``proxytool --help``) stays instant.
"""

__version__ = "0.1.0"

_API = ("Generation", "NextTokenScores", "ProxyLogitsProcessor", "ProxyTuned", "TokenPrompt")

__all__ = ["ProxyToolError", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import proxytool.api

        return getattr(proxytool.api, name)
    if name == "ProxyToolError":
        from proxytool.errors import ProxyToolError

        return ProxyToolError
    raise AttributeError(f"module 'proxytool' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(__all__))
