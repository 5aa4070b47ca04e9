# Shared fixtures (real PostgreSQL and NATS servers) for tests/ and each service's own tests/.
pytest_plugins = ["tests.fixtures"]
