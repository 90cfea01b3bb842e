#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (fuzz/corpus/<target>/) from the test suite's
own fixtures, signed with the keys the targets use. Run from the repository root after
`npm ci --prefix tests/github`: python3 fuzz/seeds.py

Seeds of schemes with a replay window (Slack, the sandbox) carry the time they were written;
the targets sign every input afresh too, so a stale seed still reaches past the signature.
Needs the `cryptography` package for the RS256 push token."""

import base64
import hashlib
import hmac
import json
import struct
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
TENANT = str(uuid.UUID(int=0x0193A1B2C3D47E5F8A9B0C1D2E3F4A5B))
GITHUB = ROOT / "tests/github/node_modules/@octokit/webhooks-examples/api.github.com/index.json"
NOW = int(time.time())
FAR = 4102444800  # 2100-01-01: tokens of the seeds outlive the corpus


def write(target, name, headers, body):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    head = "".join(f"{k}: {v}\n" for k, v in headers)
    (directory / name).write_bytes(head.encode() + b"\n" + body)


def write_raw(target, name, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)


def mac(key, *parts):
    m = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        m.update(part)
    return m.digest()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def derive_secret(secret, purpose, identity):
    """src/connector/derive.rs: HKDF-SHA256, fixed salt, length-prefixed info; lower hex."""
    put = lambda b: struct.pack(">Q", len(b)) + b
    info = put(b"purpose+identity/v1") + put(purpose.encode())
    info += struct.pack(">Q", len(identity)) + b"".join(put(p.encode()) for p in identity)
    prk = mac(b"poblysh-connectors/derived-secret/v1", secret.encode())
    return mac(prk, info, b"\x01").hex()


def github_examples():
    index = {entry["name"]: entry for entry in json.loads(GITHUB.read_text())}
    for event, action in [("issues", "opened"), ("pull_request", "opened"), ("push", None),
                          ("installation", "created")]:
        for example in index[event]["examples"]:
            if action is None or example.get("action") == action:
                yield event, json.dumps(example).encode()
                break


def github(normalize):
    secret = "github-webhook-secret"
    for n, (event, body) in enumerate(github_examples()):
        signature = "sha256=" + mac(secret.encode(), body).hex()
        headers = [("content-type", "application/json"), ("x-github-event", event),
                   ("x-github-delivery", f"72d3162e-cc78-11e3-81ab-4c9367dc095{n}"),
                   ("x-hub-signature-256", signature)]
        write("verify_github", f"{event}.delivery", headers, body)
        normalize(f"github-{event}", [("event-type", event), ("content-type", "application/json")], body)


def slack(normalize):
    secret = b"slack-signing-secret"
    for name in ["message", "url_verification", "app_rate_limited", "tokens_revoked"]:
        body = (ROOT / f"tests/slack/{name}.json").read_bytes()
        ts = str(NOW)
        signature = "v0=" + mac(secret, b"v0:", ts.encode(), b":", body).hex()
        headers = [("content-type", "application/json"), ("x-slack-request-timestamp", ts),
                   ("x-slack-signature", signature)]
        write("verify_slack", f"{name}.delivery", headers, body)
        normalize(f"slack-{name}", [], body)


def sandbox(normalize):
    secret = b"sandbox-webhook-secret-value"
    body = json.dumps({"id": "e1", "title": "Sandbox event e1", "occurred_at": "2026-11-20T10:00:00Z",
                       "actor": {"id": "u1", "name": "Ada"}, "account": "sandbox-user"}).encode()
    for event in ["event.created", "sync.requested"]:
        ts = str(NOW)
        headers = [("x-sandbox-delivery", f"d-{event}"), ("x-sandbox-event", event),
                   ("x-sandbox-timestamp", ts),
                   ("x-sandbox-signature", "v1=" + mac(secret, ts.encode(), b".", body).hex())]
        write("verify_sandbox", f"{event}.delivery", headers, body)
        normalize(f"sandbox-{event}", [("event-type", event)], body)


def jira(normalize):
    body = (ROOT / "tests/jira/webhooks/issue_updated.json").read_bytes()
    head = b64url(b'{"alg":"HS256","typ":"JWT"}')
    for name, claims in [("token", {"aud": "jira-client-id", "iat": NOW, "exp": FAR}),
                         ("token-without-claims", {})]:
        payload = b64url(json.dumps(claims).encode())
        signature = b64url(mac(b"jira-client-secret", f"{head}.{payload}".encode()))
        headers = [("authorization", f"Bearer {head}.{payload}.{signature}"),
                   ("x-atlassian-webhook-identifier", "1234567890")]
        write("verify_jira_jwt", f"{name}.delivery", headers, body)
    tenant_secret = derive_secret("jira-webhook-secret", "jira-webhook", [TENANT])
    headers = [("x-hub-signature", "sha256=" + mac(tenant_secret.encode(), body).hex()),
               ("x-atlassian-webhook-identifier", "1234567891")]
    write("verify_jira_hub_signature", "issue_updated.delivery", headers, body)
    normalize("jira-issue_updated", [("event-type", "jira:issue_updated")], body)


def google(normalize):
    # Headers as in https://developers.google.com/workspace/drive/api/guides/push#understand-notification-message-format
    for slug, state in [("google_drive", "sync"), ("google_drive", "update"), ("google_calendar", "exists")]:
        channel = "01234567-89ab-cdef-0123456789ab"
        token = derive_secret("google-channel-secret", f"{slug}-channel", [TENANT, channel])
        headers = [("x-goog-channel-id", channel), ("x-goog-channel-token", token),
                   ("x-goog-channel-expiration", "Tue, 19 Nov 2030 01:13:52 GMT"),
                   ("x-goog-resource-id", "o3hgv1538sdjfh"), ("x-goog-resource-state", state),
                   ("x-goog-resource-uri", "https://www.googleapis.com/drive/v3/files/o3hgv1538sdjfh"),
                   ("x-goog-message-number", "10")]
        write("verify_google_channel", f"{slug}-{state}.delivery", headers, b"")
        normalize(f"{slug}-{state}", [("event-type", state)] + headers[:1] + headers[3:5], b"")


def gmail(normalize):
    key = serialization.load_pem_private_key((ROOT / "tests/keys/jwt-test-rsa-1.pem").read_bytes(), None)
    head = b64url(json.dumps({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode())
    claims = {"aud": "https://connectors.example.com/webhooks/gmail", "azp": "113774264463038321964",
              "email": "gmail-push@example-project.iam.gserviceaccount.com", "email_verified": True,
              "exp": FAR, "iat": NOW, "iss": "https://accounts.google.com", "sub": "113774264463038321964"}
    payload = b64url(json.dumps(claims).encode())
    signature = key.sign(f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    token = f"{head}.{payload}.{b64url(signature)}"
    # The push of https://developers.google.com/workspace/gmail/api/guides/push#receiving_notifications
    data = base64.b64encode(b'{"emailAddress": "user@example.com", "historyId": "9876543210"}').decode()
    body = json.dumps({"message": {"data": data, "messageId": "2070443601311540",
                                   "publishTime": "2021-02-26T19:13:55.749Z"},
                       "subscription": "projects/myproject/subscriptions/mysubscription"}).encode()
    write("verify_gmail_push", "push.delivery", [("authorization", f"Bearer {token}"),
                                                 ("content-type", "application/json")], body)
    normalize("gmail-push", [("event-type", "gmail.notification")], body)


def cursors():
    service_key = base64.b64decode("ZnV6ei1zZXJ2aWNlLWtleS0wMTIzNDU2Nzg5YWJjZGU=")
    key = mac(service_key, b"poblysh-connectors/", b"pagination-cursor/v1")
    # CursorScope::new("signals", TENANT, [("kind", None)])
    scope = hashlib.sha256(b"signals\x00" + uuid.UUID(TENANT).bytes + b"kind\x00").digest()[:16]
    for n, micros in enumerate([1_700_000_000_123_456, 0, 253_402_300_799_999_999]):
        row = uuid.UUID(int=0x0193A1B2C3D47E5F8A9B0C1D2E3F0000 + n).bytes
        body = b"\x01" + scope + struct.pack(">q", micros) + row
        cursor = b64url(body + mac(key, body)[:16])
        write_raw("list_cursor", f"cursor-{n}", cursor.encode())
        write_raw("list_cursor", f"position-{n}", struct.pack(">q", micros) + row)


def return_to():
    # The cases of src/oauth/flow.rs's return_to test, against the target's allow-list.
    for n, url in enumerate([
        "https://core.example.com/connectors/done?x=1#top",
        "https://core.example.com/connectors-evil/steal",
        "https://core.example.com/connectors/..%2fadmin",
        "https://:pw@core.example.com/connectors",
        "https://app.example.com/a/b/c",
        "/..%5c..%5cadmin",
    ]):
        write_raw("return_to", f"case-{n}", url.encode())


def main():
    normalize = lambda name, headers, body: write("normalize_webhooks", f"{name}.event", headers, body)
    for part in [github, slack, sandbox, jira, google, gmail]:
        part(normalize)
    cursors()
    return_to()


if __name__ == "__main__":
    main()
