"""Who sent a message: RabbitMQ user names, and what each kind may do.

Every publisher sets the AMQP ``user_id`` property to the user it logged in
as, and RabbitMQ refuses a message whose ``user_id`` is not that user, so
the broker service can trust it. User names follow the certificates' common
names: ``pilot.<site>:<pilot_id>`` for one pilot of a site (its own
identity: the service takes the pilot's id from it, not from what the
pilot writes), ``pilot.<site>`` for every pilot of a site sharing one
identity (the site is trusted, the pilot id is not), ``service.<name>`` for
services, ``user.<name>`` for people who submit jobs. Sites and pilot ids
may hold dots but never ``:``, so a pilot identity parses one way only. On
the in-process transport (one process, no login) the identity is the local
user.
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
#: Between the site and the pilot id in a pilot's own identity.
PILOT_SEPARATOR = ":"


def pilot_user(site: str, pilot_id: str | None = None) -> str:
    """The RabbitMQ user of one pilot of ``site`` (``pilot.<site>:<pilot_id>``), or of
    every pilot of ``site`` sharing one (``pilot.<site>``)."""
    return PILOT + site + (PILOT_SEPARATOR + pilot_id if pilot_id else "")


def service_user(name: str) -> str:
    """The RabbitMQ user of a service (``service.broker``)."""
    return SERVICE + name


def submitter_user(name: str) -> str:
    """The RabbitMQ user of a person who submits and manages jobs."""
    return USER + name


def site_of(identity: str) -> str | None:
    """The site a pilot identity is bound to; None for every other identity."""
    if not identity.startswith(PILOT):
        return None
    return identity[len(PILOT) :].partition(PILOT_SEPARATOR)[0]


def pilot_of(identity: str) -> str | None:
    """The pilot id a pilot's own identity is bound to; None for a site's shared one,
    and for every identity that is not a pilot's."""
    if not identity.startswith(PILOT):
        return None
    _, sep, pilot_id = identity[len(PILOT) :].partition(PILOT_SEPARATOR)
    return pilot_id if sep else None


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


def check_pilot_site(settings: Settings, site: str, pilot_id: str | None = None) -> str | None:
    """Refuse to run a pilot for ``site`` with another site's pilot certificate, or
    as another pilot than its own identity names; the pilot id that identity binds
    it to (None: any)."""
    user = of(settings)
    bound = site_of(user)
    if bound is not None and bound != site:
        raise NotAllowed(
            f"this pilot logs in as {user}, which may serve site {bound} only, not {site}"
        )
    own = pilot_of(user)
    if own is not None and pilot_id is not None and pilot_id != own:
        raise NotAllowed(f"this pilot logs in as {user}, which is pilot {own}, not {pilot_id}")
    return own
