"""The openstacksdk connection, configured the OpenStack way (clouds.yaml, OS_CLOUD or OS_* variables)."""

import openstack
from keystoneauth1.exceptions.auth_plugins import MissingRequiredOptions
from openstack.connection import Connection

from ..core.errors import ConfigError
from ..core.settings import Settings


def connect_cloud(settings: Settings) -> Connection:
    """A connection to the configured cloud; none configured is a one-line error saying how to
    configure one, not keystoneauth's traceback."""
    try:
        openstack.config.OpenStackConfig().get_one(cloud=settings.cloud)
    except MissingRequiredOptions:
        raise ConfigError(
            "no cloud is configured: set OS_CLOUD to a cloud of clouds.yaml (or STACKREFLEX_CLOUD), "
            "or source the rc file (stackrc, overcloudrc) that sets OS_AUTH_URL"
        ) from None
    except openstack.exceptions.ConfigException as exc:
        raise ConfigError(f"cannot read the cloud configuration: {exc}") from None
    return openstack.connect(cloud=settings.cloud) if settings.cloud else openstack.connect()


def cloud_identity(settings: Settings) -> str | None:
    """Which cloud this process acts on, read from its configuration without connecting: the
    Keystone URL and the project. A run records it, so a process configured for another cloud
    never resumes the run."""
    try:
        auth = openstack.config.OpenStackConfig().get_one(cloud=settings.cloud).config.get("auth") or {}
    except Exception:
        return None
    url = str(auth.get("auth_url") or "").rstrip("/")
    project = str(auth.get("project_name") or auth.get("project_id") or "")
    return f"{url} {project}".strip()[:255] or None
