"""The throughput benchmark: ``python bench/run.py`` (``make bench``); see bench/README.md."""
