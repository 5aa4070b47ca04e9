"""The notifier service: tells people what happened, over SNS, Linear and webhooks (docs/notifications.md)."""
