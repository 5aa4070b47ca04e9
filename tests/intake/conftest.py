from tests.intake.s3kit import guarded_s3, moto_url, s3lab

__all__ = ["guarded_s3", "moto_url", "s3lab"]
