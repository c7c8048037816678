"""The event bus: envelopes, signing, the kombu publisher and router, dramatiq dispatch.

This package is the only one that knows AMQP.
"""
