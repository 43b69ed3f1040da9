"""Backend pools: endpoints from Services and EndpointSlices, balancing, and health.

Pure decision logic (endpoints, balance, health, pool) with one I/O shell (prober).
"""
