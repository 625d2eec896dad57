"""The proxy-tuning engine: logit sources with their own KV caches, the combination, sampling, the loop."""
