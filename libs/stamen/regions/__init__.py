"""Multi-region: the region registry, its settings, the database leader record and the operator commands."""
