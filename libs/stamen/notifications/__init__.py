"""Notifications: kinds, preferences, planning and messages (pure), and their adapters (channels,
secret store, repository). The notifier service and the preference API/CLI are built on these."""
