"""What a benchmark leaves on a shared RabbitMQ, removed: the queues and exchanges of its namespace."""

from kombu import Connection

from stackreflex.bus.connections import normalise_amqp_url


def remove_namespace(broker_url, namespace: str, handlers) -> None:
    """Delete ``namespace``'s router, dead-letter and unrouted queues, each handler's queues
    (with dramatiq's delay and dead-letter queues) and its exchanges. Embedded (no URL): nothing."""
    if not broker_url:
        return
    if hasattr(broker_url, "get_secret_value"):  # as the settings keep it
        broker_url = broker_url.get_secret_value()
    queues = [f"{namespace}.router", f"{namespace}.dlq", f"{namespace}.unrouted"]
    queues += [f"{namespace}.{name}{suffix}" for name in handlers for suffix in ("", ".DQ", ".XQ")]
    with Connection(normalise_amqp_url(broker_url)) as connection:
        for queue in queues:
            with connection.channel() as channel:
                channel.queue_delete(queue)  # a queue that is not there is no error
        for exchange in (namespace, f"{namespace}.unrouted"):
            with connection.channel() as channel:
                channel.exchange_delete(exchange)
