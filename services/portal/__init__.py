"""The portal service: the customer web portal and the REST API."""
