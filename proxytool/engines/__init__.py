"""Proxy-tuning inside other serving engines (vLLM): plugins the engine loads, not proxytool commands."""
