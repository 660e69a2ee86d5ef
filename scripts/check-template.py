#!/usr/bin/env python3
"""Checks what template.yaml deploys with a mutual-TLS custom domain (review item 4).

API Gateway mutual TLS applies to a whole domain. If the domain that requires client
certificates were the only way in, a new device could not enroll, a browser could not finish the
OAuth redirect and health checks would fail the handshake. With CustomDomainName set (the
template's conditions resolved as they would be), this script asserts:

  * the routes that must stay open (health, enrollment, the CA certificate, OAuth authorize and
    callback) are events of an API whose default endpoint is enabled and that has no
    mutual-TLS domain;
  * every domain with mutual TLS maps to an API whose default endpoint is disabled (so the
    handshake cannot be skipped) and which reaches the function;
  * the ApiUrl output points at the open API.

Run with the test tools' Python (cfn-lint's YAML reader understands the intrinsic-function
tags): python scripts/check-template.py template.yaml
"""

import sys

from cfnlint.decode import decode

OPEN_ROUTES = [
    ("GET", "/health"),
    ("POST", "/device/enroll"),
    ("GET", "/device/ca-certificate"),
    ("POST", "/oauth/authorize/{provider}"),
    ("GET", "/oauth/callback/{provider}"),
]


def resolve(node, conditions):
    """The template value with Fn::If and AWS::NoValue resolved under `conditions`."""
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            name, then, otherwise = node["Fn::If"]
            return resolve(then if conditions[name] else otherwise, conditions)
        out = {}
        for key, value in node.items():
            value = resolve(value, conditions)
            if value != {"Ref": "AWS::NoValue"}:
                out[key] = value
        return out
    if isinstance(node, list):
        return [resolve(v, conditions) for v in node if v != {"Ref": "AWS::NoValue"}]
    return node


def ref_name(value):
    """The logical id a Ref or GetAtt names, else None."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return (target.split(".")[0] if isinstance(target, str) else target[0])
    return None


def main(path):
    template, errors = decode(path)
    if errors:
        sys.exit(f"{path}: {errors}")
    conditions = {name: True for name in template.get("Conditions", {})}
    # The deployment under test: mutual-TLS domain set, every optional feature on.
    conditions.update(HasMtlsDomain=True)
    resources = {
        name: resolve(resource, conditions)
        for name, resource in template["Resources"].items()
        if conditions.get(resource.get("Condition"), True)
    }
    problems = []

    def api_properties(name):
        return resources.get(name, {}).get("Properties", {})

    def mtls_domains_of(api):
        """Names of mutual-TLS domains attached to `api` (SAM Domain or ApiMapping)."""
        found = []
        domain = api_properties(api).get("Domain", {})
        if domain.get("MutualTlsAuthentication"):
            found.append(f"{api}.Domain")
        for name, resource in resources.items():
            if resource["Type"] == "AWS::ApiGatewayV2::ApiMapping":
                props = resource["Properties"]
                target = resources.get(ref_name(props.get("DomainName")), {})
                if ref_name(props.get("ApiId")) == api and target.get("Properties", {}).get(
                    "MutualTlsAuthentication"
                ):
                    found.append(ref_name(props.get("DomainName")))
        return found

    function = resources["BackendFunction"]["Properties"]
    events = function.get("Events", {})
    for method, path in OPEN_ROUTES:
        serving = [
            e for e in events.values()
            if e["Type"] == "HttpApi"
            and e["Properties"].get("Path") == path
            and e["Properties"].get("Method", "").upper() == method
        ]
        if not serving:
            problems.append(f"{method} {path}: no HttpApi event serves it")
        for event in serving:
            api = ref_name(event["Properties"].get("ApiId")) or "ServerlessHttpApi"
            if api_properties(api).get("DisableExecuteApiEndpoint") is True:
                problems.append(f"{method} {path}: {api} has its default endpoint disabled")
            if mtls_domains_of(api):
                problems.append(
                    f"{method} {path}: {api} is behind mutual TLS ({', '.join(mtls_domains_of(api))})"
                )

    mtls_apis = [
        name
        for name, resource in resources.items()
        if resource["Type"] in ("AWS::ApiGatewayV2::Api", "AWS::Serverless::HttpApi")
        and mtls_domains_of(name)
    ]
    if not mtls_apis:
        problems.append("no API sits behind the mutual-TLS domain")
    for api in mtls_apis:
        props = api_properties(api)
        if props.get("DisableExecuteApiEndpoint") is not True:
            problems.append(f"{api}: the default endpoint would skip the mutual-TLS handshake")
        reaches_function = ref_name(props.get("Target")) == "BackendFunction" or any(
            ref_name(e["Properties"].get("ApiId")) == api for e in events.values()
        )
        if not reaches_function:
            problems.append(f"{api}: does not reach BackendFunction")
        permitted = any(
            r["Type"] == "AWS::Lambda::Permission"
            and ref_name(r["Properties"].get("FunctionName")) == "BackendFunction"
            and api in str(r["Properties"].get("SourceArn"))
            for r in resources.values()
        )
        if ref_name(props.get("Target")) == "BackendFunction" and not permitted:
            problems.append(f"{api}: API Gateway may not invoke BackendFunction")

    api_url = str(template.get("Outputs", {}).get("ApiUrl", {}).get("Value"))
    open_apis = {
        ref_name(e["Properties"].get("ApiId"))
        for e in events.values()
        if e["Type"] == "HttpApi" and e["Properties"].get("Path") == "/health"
    }
    if not any(f"${{{api}}}.execute-api" in api_url for api in open_apis):
        problems.append(f"ApiUrl ({api_url}) is not the open API's endpoint")

    if problems:
        print("template.yaml with CustomDomainName set:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        sys.exit(1)
    print("template.yaml: open routes stay reachable; mutual TLS guards only the device API")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml")
