"""Reads the SAM template with cfn-lint's own YAML decoder (CloudFormation
tags and all) and prints, as JSON, what each function's role may do: for
every Allow statement its actions and resources (a `!Sub` string with the
bucket part cut to `BUCKET`, an `!If` as its first branch, a `!Ref` or
`!GetAtt` as `ref:NAME`), plus the bucket's public-access block and whether
its policy denies requests without TLS.

Usage: template_policies.py TEMPLATE
"""

import json
import sys

from cfnlint.decode import cfn_yaml

BUCKET = "arn:${AWS::Partition}:s3:::${BucketNamePrefix}-${AWS::AccountId}-${AWS::Region}"


def resource(value):
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [r for item in value for r in resource(item)]
    if isinstance(value, dict):
        if "Fn::Sub" in value:
            text = value["Fn::Sub"]
            text = text[0] if isinstance(text, list) else text
            return [text.replace(BUCKET, "BUCKET")]
        if "Fn::If" in value:
            return resource(value["Fn::If"][1])
        if "Ref" in value:
            return ["" if value["Ref"] == "AWS::NoValue" else "ref:" + value["Ref"]]
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return ["ref:" + (target[0] if isinstance(target, list) else target.split(".")[0])]
    return [json.dumps(value)]


template = cfn_yaml.loads(open(sys.argv[1]).read())
resources = template["Resources"]
roles = {}
for name, body in resources.items():
    if body.get("Type") != "AWS::IAM::Role":
        continue
    statements = []
    for policy in body.get("Properties", {}).get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            if statement.get("Effect") != "Allow":
                continue
            actions = statement["Action"]
            statements.append({
                "sid": statement.get("Sid", ""),
                "actions": actions if isinstance(actions, list) else [actions],
                "resources": [r for r in resource(statement.get("Resource", [])) if r],
            })
    roles[name] = statements
bucket = next(b for b in resources.values() if b.get("Type") == "AWS::S3::Bucket")
policy = next(b for b in resources.values() if b.get("Type") == "AWS::S3::BucketPolicy")
denies_plain_http = any(
    s.get("Effect") == "Deny" and "aws:SecureTransport" in json.dumps(s.get("Condition", {}))
    for s in policy["Properties"]["PolicyDocument"]["Statement"]
)
print(json.dumps({
    "roles": roles,
    "public_access_block": bucket["Properties"].get("PublicAccessBlockConfiguration", {}),
    "denies_plain_http": denies_plain_http,
}))
