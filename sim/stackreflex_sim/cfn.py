"""heat-api-cfn: the CloudFormation-compatible API where POLL_SERVER_CFN agents read their
metadata (``DescribeStackResource``) and CFN_SIGNAL deployments are signalled.

Requests are authenticated by an EC2 signature, version 2, as python-keystoneclient's
``Ec2Signer`` makes it for os-collect-config's ``cfn`` collector: HMAC-SHA256 over the verb,
the host, the path and the sorted, percent-encoded query, base64-encoded.
"""

import base64
import hashlib
import hmac
import json
from urllib.parse import quote
from xml.sax.saxutils import escape

from .http import HttpError, Request, Response, Router


def ec2_signature(secret: str, verb: str, host: str, path: str, params: dict[str, str]) -> str:
    """The EC2 (version 2) signature of a request: what ``Ec2Signer.generate`` computes."""
    canonical = "&".join(
        f"{quote(k, safe='')}={quote(str(params[k]), safe='-_~')}" for k in sorted(params) if k != "Signature"
    )
    digest = {"HmacSHA256": hashlib.sha256, "HmacSHA1": hashlib.sha1}.get(params.get("SignatureMethod"), hashlib.sha256)
    mac = hmac.new(secret.encode(), f"{verb}\n{host}\n{path}\n{canonical}".encode(), digest)
    return base64.b64encode(mac.digest()).decode()


def cfn_error(error: HttpError) -> object:
    """The AWS error document heat-api-cfn answers with."""
    code = error.error_type or error.title.replace(" ", "")
    return (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code><Message>{escape(error.message)}"
        f"</Message></Error></ErrorResponse>"
    ).encode()


class Cfn:
    """``/heat-cfn/v1/``: the metadata of a server stack's resource, and deployment signals."""

    def __init__(self, heat):
        self.heat = heat

    def routes(self, router: Router) -> None:
        router.add("GET", "/heat-cfn/v1", self.describe_stack_resource, cfn_error, auth=False)
        router.add("POST", "/heat-cfn/v1/signal/{arn}", self.signal, cfn_error, auth=False)

    def _authenticate(self, request: Request, verb: str) -> None:
        params = {k: v[-1] for k, v in request.query.items()}
        secret = self.heat.ec2_keys.get(params.get("AWSAccessKeyId", ""))
        expected = (
            ec2_signature(secret, verb, request.headers.get("host", ""), request.raw_path, params) if secret else None
        )
        if expected is None or not hmac.compare_digest(expected, params.get("Signature", "")):
            raise HttpError(403, "Forbidden", "User is not authorized to perform action", "AccessDenied")

    def describe_stack_resource(self, request: Request) -> Response:
        self._authenticate(request, "GET")
        if request.arg("Action") != "DescribeStackResource":
            raise HttpError(
                400, "Bad Request", f"Action {request.arg('Action')} is not supported here", "InvalidAction"
            )
        stack_name, logical = request.arg("StackName", ""), request.arg("LogicalResourceId", "")
        with self.heat.lock:
            node = self.heat.member_of_stack(stack_name)
            if node is None or node.access_key != request.arg("AWSAccessKeyId"):
                raise HttpError(404, "Not Found", f"The Stack ({stack_name}) could not be found.", "ValidationError")
            resource = node.server.nested.resources.get(logical)
            if resource is None:
                raise HttpError(404, "Not Found", f"The Resource ({logical}) could not be found.", "ValidationError")
            metadata, status = json.dumps(resource.metadata), resource.status
        if resource is node.deployed_server:
            self.heat.polled(node)
        body = (
            f"<DescribeStackResourceResponse><DescribeStackResourceResult><StackResourceDetail>"
            f"<StackId>{escape(node.server.nested.id)}</StackId><StackName>{escape(stack_name)}</StackName>"
            f"<LogicalResourceId>{escape(logical)}</LogicalResourceId>"
            f"<PhysicalResourceId>{escape(resource.physical_id)}</PhysicalResourceId>"
            f"<ResourceType>{escape(resource.type)}</ResourceType><ResourceStatus>{escape(status)}</ResourceStatus>"
            f"<Metadata>{escape(metadata)}</Metadata></StackResourceDetail></DescribeStackResourceResult>"
            f"</DescribeStackResourceResponse>"
        )
        return Response(200, body.encode(), {"Content-Type": "application/xml"})

    def signal(self, request: Request) -> Response:
        """CFN_SIGNAL: POST to the deployment's pre-signed URL."""
        self._authenticate(request, "POST")
        resource_name = request.match["arn"].rsplit("/resources/", 1)[-1]
        stack_path = request.match["arn"].split(":stacks/", 1)[-1].rsplit("/resources/", 1)[0]
        with self.heat.lock:
            stack = self.heat.stacks.get(stack_path.rsplit("/", 1)[-1])
            resource = stack.resources.get(resource_name) if stack else None
        if resource is None:
            raise HttpError(404, "Not Found", f"The Resource ({resource_name}) could not be found.", "ValidationError")
        try:
            details = json.loads(request.body or b"{}")
        except ValueError:
            details = {}
        self.heat.signal(resource.physical_id, details if isinstance(details, dict) else {})
        return Response(200, b"", {"Content-Type": "application/json"})
