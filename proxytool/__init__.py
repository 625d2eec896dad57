"""proxytool: proxy-tuning end to end (Liu et al., 2024, arXiv 2401.08565)."""

__version__ = "0.1.0"
