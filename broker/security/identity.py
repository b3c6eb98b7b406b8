"""Who sent a message: RabbitMQ user names, and what each kind may do.

Every publisher sets the AMQP ``user_id`` property to the user it logged in
as, and RabbitMQ refuses a message whose ``user_id`` is not that user, so
the broker service can trust it. User names follow the certificates' common
names: ``pilot.<site>`` for a site's pilots, ``service.<name>`` for
services, ``user.<name>`` for people who submit jobs. On the in-process
transport (one process, no login) the identity is the local user.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from broker.errors import NotAllowed
from broker.security import token_login
from broker.settings import Settings, broker_nodes

PILOT = "pilot."
SERVICE = "service."
USER = "user."


def pilot_user(site: str) -> str:
    """The RabbitMQ user of every pilot of ``site``."""
    return PILOT + site


def service_user(name: str) -> str:
    """The RabbitMQ user of a service (``service.broker``)."""
    return SERVICE + name


def submitter_user(name: str) -> str:
    """The RabbitMQ user of a person who submits and manages jobs."""
    return USER + name


def site_of(identity: str) -> str | None:
    """The site a pilot identity is bound to; None for every other identity."""
    return identity[len(PILOT) :] if identity.startswith(PILOT) else None


def of(settings: Settings) -> str:
    """The user this process logs in as, which its messages carry as ``user_id``.

    A client certificate's common name (EXTERNAL login), else the token's user
    (token login), else the URL's user, else (in-process transport, or a URL
    without one) the local user.
    """
    if settings.tls_cert and settings.broker_url.startswith("amqps://"):
        from broker.security.certs import common_name, load_cert

        return common_name(load_cert(Path(settings.tls_cert)))
    if settings.broker_url.startswith("memory://"):
        return getpass.getuser()
    if settings.broker_token_file:
        path = settings.broker_token_file
        return token_login.user(token_login.claims_of(token_login.read(path), path))
    username = urlsplit(broker_nodes(settings.broker_url)[0]).username
    return unquote(username) if username else "guest"


def production_role(settings: Settings) -> frozenset[str]:
    """The identities with the production role: they may kill and retry anyone's jobs."""
    return frozenset(name.strip() for name in settings.production_role.split(",") if name.strip())


def may_manage(settings: Settings, identity: str, owner: str | None) -> str | None:
    """Why ``identity`` may not kill or retry a job owned by ``owner``; None if it may."""
    if owner == identity or identity in production_role(settings):
        return None
    whose = f"owned by {owner}" if owner else "with no recorded owner"
    return f"{identity} does not own it ({whose}) and has no production role"


def check_pilot_site(settings: Settings, site: str) -> None:
    """Refuse to run a pilot for ``site`` with another site's pilot certificate."""
    user = of(settings)
    bound = site_of(user)
    if bound is not None and bound != site:
        raise NotAllowed(
            f"this pilot logs in as {user}, which may serve site {bound} only, not {site}"
        )
