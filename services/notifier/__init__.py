"""The notifier service: SNS, Linear, webhooks (not built yet)."""
