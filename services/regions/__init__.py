"""The regions service: region health and failover (not built yet)."""
