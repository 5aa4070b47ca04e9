from tests.api.conftest import moto_endpoint, world

__all__ = ["moto_endpoint", "world"]
