"""A relay in front of a real service (RabbitMQ, PostgreSQL): it can terminate TLS (as stunnel
or HAProxy would in front of a broker), cut every connection it carries, and refuse new ones
for a while, so tests can stage what the services here do not offer: an amqps:// listener,
connections that break, a database that is down."""

import asyncio
import datetime
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class BrokerProxy:
    """Forwards 127.0.0.1:``port`` to the broker; ``cut()`` closes what it carries now."""

    def __init__(self, upstream: tuple[str, int], tls: ssl.SSLContext | None = None):
        self.upstream = upstream
        self._tls = tls
        self._writers: set[asyncio.StreamWriter] = set()
        #: while set, connections are accepted and closed at once, as by a host whose service is down
        self.down = False
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="broker-proxy")
        self._thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=self._tls))
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()

    async def _relay(self, client_reader, client_writer) -> None:
        if self.down:
            client_writer.transport.abort()
            return
        try:
            broker_reader, broker_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        self._writers |= {client_writer, broker_writer}

        async def pump(reader, writer) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                for w in (client_writer, broker_writer):
                    w.close()
                    self._writers.discard(w)

        await asyncio.gather(
            pump(client_reader, broker_writer), pump(broker_reader, client_writer), return_exceptions=True
        )

    def cut(self) -> None:
        """Close every connection relayed now (new ones are still accepted)."""

        def close_all() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._loop.call_soon_threadsafe(close_all)

    def go_down(self) -> None:
        """The service becomes unreachable: what is relayed is cut, and new connections are refused."""
        self.down = True
        self.cut()

    def come_back(self) -> None:
        self.down = False

    def close(self) -> None:
        """Stop listening and close everything: the broker is unreachable through here."""
        self.cut()

        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()
            relays = asyncio.all_tasks() - {asyncio.current_task()}
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def make_certificates(directory: Path, hostname: str = "localhost") -> tuple[Path, ssl.SSLContext]:
    """A private CA (its certificate in ``ca.pem``) and a server context whose certificate it
    signed for ``hostname`` only, as an internal CA issues one for a broker."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool, names: list | None = None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate("stackreflex test CA", ca_key, "stackreflex test CA", ca_key, ca=True)
    server_cert = certificate(
        hostname, server_key, "stackreflex test CA", ca_key, ca=False, names=[x509.DNSName(hostname)]
    )
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return ca_file, server
