"""`proxytool serve`: an OpenAI-compatible HTTP API and a web chat page over loaded proxy models."""
