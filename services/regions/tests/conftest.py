from tests.intake.s3kit import moto_url, s3lab

__all__ = ["moto_url", "s3lab"]
