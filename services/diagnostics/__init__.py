"""The diagnostics service: classifies failures against the error catalog."""
