from tests.customers.awskit import moto_endpoint

__all__ = ["moto_endpoint"]
