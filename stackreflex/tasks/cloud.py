"""The openstacksdk connection, configured the OpenStack way (clouds.yaml, OS_CLOUD or OS_* variables)."""

import openstack

from ..settings import Settings


def connect_cloud(settings: Settings):
    return openstack.connect(cloud=settings.cloud) if settings.cloud else openstack.connect()
