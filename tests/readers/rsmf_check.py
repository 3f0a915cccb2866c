"""Reads RSMF files with readers this project did not write: Python's
`email` package for the RFC 5322 wrapper, `zipfile` for rsmf.zip and
`jsonschema` (PyPI) for the manifest, against a schema written here from the
rules of Relativity's RSMF 2.0 specification. Prints one JSON object per
file: what it holds and every problem found (empty when valid).

Usage: rsmf_check.py FILE...
"""

import email
import email.policy
import io
import json
import sys
import zipfile

import jsonschema

CUSTOM = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "value"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "value": {"type": "string", "minLength": 1},
        },
    },
}

SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["version", "participants", "conversations", "events"],
    "properties": {
        "version": {"type": "string", "minLength": 5},
        "participants": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "display": {"type": "string"},
                    "email": {"type": "string"},
                    "avatar": {"type": "string"},
                    "account_id": {"type": "string"},
                    "custom": CUSTOM,
                },
            },
        },
        "conversations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "platform", "participants"],
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "display": {"type": "string"},
                    "platform": {"type": "string", "minLength": 1},
                    "type": {"enum": ["direct", "channel"]},
                    "participants": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1},
                    },
                    "custodian": {"type": "string"},
                    "custom": CUSTOM,
                    "icon": {"type": "string"},
                },
            },
        },
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "id": {"type": "string"},
                    "type": {
                        "enum": ["message", "disclaimer", "join", "leave", "history", "unknown"]
                    },
                    "parent": {"type": "string"},
                    "body": {"type": "string"},
                    "participant": {"type": "string"},
                    "conversation": {"type": "string"},
                    "timestamp": {
                        "type": "string",
                        # An explicit offset (Z or +hh:mm), as review tools need.
                        "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$",
                    },
                    "deleted": {"type": "boolean"},
                    "importance": {"enum": ["normal", "high"]},
                    "direction": {"enum": ["incoming", "outgoing"]},
                    "attachments": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id"],
                            "properties": {
                                "id": {"type": "string", "minLength": 1},
                                "display": {"type": "string"},
                                "size": {"type": "integer"},
                            },
                        },
                    },
                    "custom": CUSTOM,
                },
            },
        },
        "eventcollectionid": {"type": "string"},
    },
}


def check(path):
    problems = []
    raw = open(path, "rb").read()
    first = raw.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    if first != "X-RSMF-Version: 2.0.0":
        problems.append("first header is %r" % first)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    attachments = list(message.iter_attachments())
    if len(attachments) != 1 or attachments[0].get_filename() != "rsmf.zip":
        problems.append("attachments: %r" % [a.get_filename() for a in attachments])
        return {"file": path, "problems": problems}
    archive = zipfile.ZipFile(io.BytesIO(attachments[0].get_content()))
    names = set(archive.namelist())
    manifest = json.loads(archive.read("rsmf_manifest.json"))
    validator = jsonschema.Draft7Validator(SCHEMA)
    problems.extend(
        "schema: %s at %s" % (e.message, "/".join(map(str, e.path)))
        for e in validator.iter_errors(manifest)
    )
    participants = {p["id"] for p in manifest["participants"]}
    conversations = {c["id"] for c in manifest["conversations"]}
    referenced = set()
    for i, event in enumerate(manifest["events"]):
        if "participant" in event and event["participant"] not in participants:
            problems.append("event %d: unknown participant %r" % (i, event["participant"]))
        if "conversation" in event and event["conversation"] not in conversations:
            problems.append("event %d: unknown conversation" % i)
        for attachment in event.get("attachments", []):
            referenced.add(attachment["id"])
            if attachment["id"] not in names:
                problems.append("event %d: attachment %r not in zip" % (i, attachment["id"]))
    for name in names - {"rsmf_manifest.json"} - referenced:
        problems.append("zip file %r named by no event" % name)
    count = message.get("X-RSMF-EventCount")
    if count is not None and int(count) != len(manifest["events"]):
        problems.append("X-RSMF-EventCount %s != %d" % (count, len(manifest["events"])))
    times = sorted(e["timestamp"] for e in manifest["events"] if "timestamp" in e)
    if times:
        if message.get("X-RSMF-BeginDate") != times[0]:
            problems.append("BeginDate %s != %s" % (message.get("X-RSMF-BeginDate"), times[0]))
        if message.get("X-RSMF-EndDate") != times[-1]:
            problems.append("EndDate %s != %s" % (message.get("X-RSMF-EndDate"), times[-1]))
    files = {name: len(archive.read(name)) for name in names - {"rsmf_manifest.json"}}
    return {
        "file": path,
        "problems": problems,
        "subject": str(message["Subject"]),
        "from": str(message["From"]),
        "to": str(message["To"]),
        "custodian": message.get("X-RSMF-Custodian"),
        "body": message.get_body(preferencelist=("plain",)).get_content(),
        "manifest": manifest,
        "files": files,
    }


if __name__ == "__main__":
    print(json.dumps([check(path) for path in sys.argv[1:]]))
