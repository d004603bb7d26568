"""failsafe's benchmarks against its peers: ``python -m bench`` (``make bench``)."""
