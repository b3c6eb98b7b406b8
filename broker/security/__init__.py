"""Security: certificates and access tokens, the identities of senders, RabbitMQ provisioning."""
