#!/usr/bin/env python3
"""A Bearer token server for the tests' docker-registry (its `auth: token` mode).

    token_server.py PORT_FILE KEY CERT ISSUER SERVICE USER PASSWORD

Listens on 127.0.0.1 (a free port, written to PORT_FILE), answers GET /token?service=&scope=
with a JWT signed RS256 by KEY (with openssl, so no Python package is needed), carrying
CERT in its x5c header so the registry checks it against its rootcertbundle. Basic
credentials must be USER:PASSWORD; without any, the token grants nothing (anonymous).
Wrong credentials get 401 with a registry-style JSON error. Every scope asked is granted.
"""
import base64
import http.server
import json
import subprocess
import sys
import time
import urllib.parse

PORT_FILE, KEY, CERT, ISSUER, SERVICE, USER, PASSWORD = sys.argv[1:8]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cert_der() -> bytes:
    return subprocess.run(
        ["openssl", "x509", "-in", CERT, "-outform", "DER"], check=True, capture_output=True
    ).stdout


X5C = base64.b64encode(cert_der()).decode()


def sign(payload: dict) -> str:
    header = {"typ": "JWT", "alg": "RS256", "x5c": [X5C]}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", KEY],
        input=signing_input.encode(),
        check=True,
        capture_output=True,
    ).stdout
    return f"{signing_input}.{b64(sig)}"


def access(scopes):
    out = []
    for scope in scopes:
        for one in scope.split(" "):
            parts = one.split(":")
            if len(parts) >= 3:
                out.append({"type": parts[0], "name": ":".join(parts[1:-1]),
                            "actions": parts[-1].split(",")})
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def deny(self):
        body = json.dumps({"errors": [{"code": "UNAUTHORIZED",
                                       "message": "wrong user name or password"}]}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path != "/token":
            self.send_error(404)
            return
        query = urllib.parse.parse_qs(url.query)
        auth = self.headers.get("Authorization", "")
        subject = ""
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if (user, password) != (USER, PASSWORD):
                self.deny()
                return
            subject = user
        now = int(time.time())
        claims = {
            "iss": ISSUER, "sub": subject, "aud": query.get("service", [SERVICE])[0],
            "exp": now + 600, "nbf": now - 60, "iat": now, "jti": str(time.time_ns()),
            "access": access(query.get("scope", [])) if subject else [],
        }
        token = sign(claims)
        body = json.dumps({"token": token, "access_token": token, "expires_in": 600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402

os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
