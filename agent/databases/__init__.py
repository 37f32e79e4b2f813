"""The sample databases the bundled assistant profiles work on (built on first use, deterministic)."""
