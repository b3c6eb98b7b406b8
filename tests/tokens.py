"""A private RabbitMQ node that logs clients in with JWT access tokens.

It runs ``rabbitmq_auth_backend_oauth2`` before the internal backend, with
the public half of a signing key of its own, as ``pandamq tokens
rabbitmq-config`` prints it; guest still logs in with its password over the
same plain listener, so that tests can look at queues as an administrator.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from broker.security import scopes, tokens
from broker.settings import Settings
from tests.nodes import RabbitMQNode, private_dir


class TokenRabbitMQNode(RabbitMQNode):
    """A RabbitMQ node that takes tokens signed by its own key."""

    def __init__(self) -> None:
        self.keys = private_dir("pandamq-token-keys-", "rabbitmq")
        self.key = tokens.new_key()
        self.signing_key = tokens.write(self.keys, tokens.DEFAULT_KID, self.key)
        shutil.chown(self.signing_key.public, "rabbitmq", "rabbitmq")
        super().__init__(
            extra_config=tokens.rabbitmq_config(self.signing_key) + "\n",
            plugins=("rabbitmq_auth_backend_oauth2",),
        )

    def token(
        self,
        user: str,
        vhost: str,
        minutes: float = 10,
        key: tokens.Key | None = None,
        issued_at: float | None = None,
        operator: bool = False,
    ) -> str:
        """A token for ``user`` with its role's scopes in ``vhost``, signed by this node's key
        (or by ``key``, with this node's key id)."""
        granted = scopes.scopes(scopes.for_user(user, operator), vhost)
        return tokens.issue(
            key or self.key, tokens.DEFAULT_KID, user, granted, minutes, issued_at=issued_at
        )

    def token_url(self, vhost: str) -> str:
        """The amqp:// URL of a vhost without a user: the token says who."""
        return f"amqp://127.0.0.1:{self.port}/{vhost}"

    def settings_for(
        self, base: Settings, vhost: str, token_file: Path, **changes: object
    ) -> Settings:
        """``base`` logging in to ``vhost`` with the token in ``token_file``."""
        return base.replace(
            broker_url=self.token_url(vhost), broker_token_file=str(token_file), **changes
        )

    def remove(self) -> None:
        """Stop the node and delete its files and keys."""
        super().remove()
        shutil.rmtree(self.keys, ignore_errors=True)
