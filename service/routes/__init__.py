"""One router per file: ops (health, ready, models, metrics), next-token, score, generate."""
