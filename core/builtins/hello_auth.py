"""Ed25519 proof of key for WebSocket hellos (the built-in ``meshhub_authenticate_hello``).

A hello is signed over its canonical JSON (every field but ``sig``, keys sorted, no spaces) and
bound to the nonce of the ``challenge`` frame the hub sent on this connection, so it is good for
one connection only and cannot be replayed, even after a restart. (Hellos bound only to a
timestamp are refused.) ``ts``, when present, must be a whole number of unix seconds. Its
``audience`` names the hub it is meant for (``host:port`` as the client dialled it), so a hub
that a member connects to cannot relay that member's hello to another hub
(:func:`meshhub.admission.check_audience`, run by the core with the connection in hand).

Two kinds of key may sign:

* a member key itself (the CLI): the proof's ``member_key`` is that key;
* a session key, attested by its member key (``hub mcp``): the hello carries ``member_key`` and
  ``attestation: {"expires": <unix seconds>, "sig": <hex>}``, the member key's signature over
  :func:`attestation_payload`. Each session has its own key that ends at ``expires``; the member
  behind it is who is admitted (see :mod:`meshhub.server`).
"""

from __future__ import annotations

import json
import time
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from meshhub import hookimpl
from meshhub.errors import AuthFailed
from meshhub.fields import MAX_SESSION, check_length

MAX_ATTESTATION_SECONDS = 30 * 86400


def canonical(hello: dict[str, Any]) -> bytes:
    body = {k: v for k, v in hello.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_hello(key: SigningKey, hello: dict[str, Any]) -> dict[str, Any]:
    """Add ``public_key`` and ``sig`` to ``hello`` (the client side of this scheme)."""
    signed = dict(hello, public_key=key.verify_key.encode().hex())
    signed["sig"] = key.sign(canonical(signed)).signature.hex()
    return signed


def attestation_payload(member_key: str, session_key: str, expires: int) -> bytes:
    return json.dumps({"expires": expires, "member_key": member_key, "purpose": "meshhub-session",
                       "session_key": session_key}, sort_keys=True, separators=(",", ":")).encode()


def attest_session(member: SigningKey, session: SigningKey, expires: int) -> dict[str, Any]:
    """The hello fields that let ``session`` sign for ``member`` until ``expires``."""
    member_key = member.verify_key.encode().hex()
    payload = attestation_payload(member_key, session.verify_key.encode().hex(), expires)
    return {"member_key": member_key,
            "attestation": {"expires": expires, "sig": member.sign(payload).signature.hex()}}


def _verify_key(hex_key: object, what: str) -> VerifyKey:
    try:
        return VerifyKey(bytes.fromhex(hex_key))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise AuthFailed(f"{what} must be the hex of an ed25519 public key",
                         code="malformed") from None


def _check_attestation(hello: dict[str, Any], session_key: str, now: float) -> str:
    member_key, attestation = hello.get("member_key"), hello.get("attestation")
    if not isinstance(attestation, dict) or not isinstance(member_key, str):
        raise AuthFailed("a session hello carries member_key and attestation {expires, sig}",
                         code="malformed")
    expires, sig = attestation.get("expires"), attestation.get("sig")
    if type(expires) is not int or not isinstance(sig, str):
        raise AuthFailed("attestation.expires is whole unix seconds and attestation.sig hex",
                         code="malformed")
    if expires <= now:
        raise AuthFailed("the session's attestation has expired; start the session again",
                         code="stale")
    if expires > now + MAX_ATTESTATION_SECONDS:
        raise AuthFailed("a session attestation may last at most 30 days", code="malformed")
    member = _verify_key(member_key, "member_key")
    try:
        member.verify(attestation_payload(member_key, session_key, expires), bytes.fromhex(sig))
    except (BadSignatureError, ValueError):
        raise AuthFailed("the session's attestation is not signed by its member key",
                         code="bad_signature") from None
    return member.encode().hex()  # one spelling of a key (lower-case hex) everywhere


def verify_hello(hello: dict[str, Any], nonce: str, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    public_key, sig = hello.get("public_key"), hello.get("sig")
    if not isinstance(public_key, str) or not isinstance(sig, str):
        raise AuthFailed("hello needs public_key and sig (hex)", code="malformed")
    verify_key = _verify_key(public_key, "public_key")
    try:
        signature = bytes.fromhex(sig)
    except ValueError:
        raise AuthFailed("sig must be the hex of an ed25519 signature", code="malformed") from None
    try:
        verify_key.verify(canonical(hello), signature)
    except BadSignatureError:
        raise AuthFailed("the hello's signature does not match its public key",
                         code="bad_signature") from None
    ts = hello.get("ts")
    if ts is not None and type(ts) is not int:
        raise AuthFailed("ts is whole unix seconds (an integer)", code="malformed")
    if hello.get("nonce") is None:
        raise AuthFailed("sign the challenge's nonce: a hello must carry this connection's "
                         "nonce", code="malformed")
    if hello["nonce"] != nonce:
        raise AuthFailed(
            "the hello is bound to another connection's nonce; sign this connection's "
            "challenge", code="replayed",
        )
    session = hello.get("session")
    if session is not None and not isinstance(session, str):
        raise AuthFailed("session is a short label (text)", code="malformed")
    if session is not None:
        check_length("session", session, MAX_SESSION)
    public_key = verify_key.encode().hex()  # one spelling of a key (lower-case hex) everywhere
    member_key = public_key
    if "attestation" in hello or "member_key" in hello:
        member_key = _check_attestation(hello, hello["public_key"], now)
    connector = str(hello.get("connector") or "cli")
    identity = f"{connector}:{member_key}" + (f"/{session}" if session else "")
    return {"identity": identity, "public_key": public_key, "member_key": member_key}


@hookimpl(trylast=True)
def meshhub_authenticate_hello(hub: Any, hello: dict[str, Any], nonce: str) -> dict[str, Any]:
    """Ed25519-signed hellos; the fallback for every hello no other plugin claims. (The core
    then checks the hello's ``audience``, which needs the connection: see
    :func:`meshhub.admission.check_audience`.)"""
    return verify_hello(hello, nonce)
