"""Security: certificates, identities of message senders, RabbitMQ provisioning."""
