"""The validator service: turns submitted worksets into queued or rejected ones."""
