"""The diagnostics service: classifies failures (issue 5: not built yet)."""
