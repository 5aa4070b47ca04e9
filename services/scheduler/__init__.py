"""The scheduler service: admission, slots, dispatch to clusters (issue 4: not built yet)."""
