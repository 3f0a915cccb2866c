#!/usr/bin/env python3
"""Reads every message of Maildir folders with Python's own `email` package
(a MIME reader this project did not write) and prints them as JSON, so the
tests check what a mail client would see, not what our code believes it wrote.

usage: maildir_messages.py FOLDER...   (each FOLDER holds cur/ and new/)
"""
import email
import email.policy
import json
import os
import sys


def read(path):
    with open(path, "rb") as f:
        message = email.message_from_binary_file(f, policy=email.policy.default)
    plain = message.get_body(preferencelist=("plain",))
    attachments = [
        {
            "filename": part.get_filename(),
            "content_type": part.get_content_type(),
            "size": len(part.get_payload(decode=True) or b""),
        }
        for part in message.iter_attachments()
    ]
    return {
        "file": path,
        "message_id": str(message.get("Message-ID", "")).strip(),
        "in_reply_to": str(message.get("In-Reply-To", "")).strip(),
        "references": str(message.get("References", "")).strip(),
        "subject": str(message.get("Subject", "")),
        "conversation": str(message.get("X-Chat-Conversation-Id", "")),
        "day": str(message.get("X-Chat-Day", "")),
        "dialect": str(message.get("X-Chat-Dialect", "")),
        "source_file": str(message.get("X-Chat-Source-File", "")),
        "plain": plain.get_content() if plain is not None else "",
        "attachments": attachments,
    }


def main(folders):
    out = {}
    for folder in folders:
        messages = []
        for sub in ("new", "cur"):
            directory = os.path.join(folder, sub)
            if not os.path.isdir(directory):
                continue
            for name in sorted(os.listdir(directory)):
                messages.append(read(os.path.join(directory, name)))
        out[folder] = messages
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
