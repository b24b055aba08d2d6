"""Ed25519 proof of key for WebSocket hellos (the built-in ``meshhub_authenticate_hello``).

A hello is signed over its canonical JSON (every field but ``sig``, keys sorted, no spaces). It
is bound either to the nonce of the ``challenge`` frame the hub sent on this connection, or to a
timestamp within +-60 s of the hub's clock. A nonce is good for one hello on one connection; a
timestamped signature is remembered until it is too old to pass anyway, so a replay is refused.
"""

from __future__ import annotations

import json
import time
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from meshhub import hookimpl
from meshhub.errors import AuthFailed

SKEW_SECONDS = 60.0


def canonical(hello: dict[str, Any]) -> bytes:
    body = {k: v for k, v in hello.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_hello(key: SigningKey, hello: dict[str, Any]) -> dict[str, Any]:
    """Add ``public_key`` and ``sig`` to ``hello`` (the client side of this scheme)."""
    signed = dict(hello, public_key=key.verify_key.encode().hex())
    signed["sig"] = key.sign(canonical(signed)).signature.hex()
    return signed


class ReplayGuard:
    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def check(self, sig: str, now: float) -> None:
        if len(self._seen) > 10_000:
            cutoff = now - 2 * SKEW_SECONDS
            self._seen = {s: t for s, t in self._seen.items() if t > cutoff}
        if sig in self._seen:
            raise AuthFailed("this hello was already used; sign a new one", code="replayed")
        self._seen[sig] = now


_guard = ReplayGuard()


def verify_hello(hello: dict[str, Any], nonce: str, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    public_key, sig = hello.get("public_key"), hello.get("sig")
    if not isinstance(public_key, str) or not isinstance(sig, str):
        raise AuthFailed("hello needs public_key and sig (hex)", code="malformed")
    try:
        verify_key = VerifyKey(bytes.fromhex(public_key))
        signature = bytes.fromhex(sig)
    except (ValueError, TypeError):
        raise AuthFailed("public_key and sig must be hex of an ed25519 key and signature",
                         code="malformed") from None
    try:
        verify_key.verify(canonical(hello), signature)
    except BadSignatureError:
        raise AuthFailed("the hello's signature does not match its public key",
                         code="bad_signature") from None
    if hello.get("nonce") is not None:
        if hello["nonce"] != nonce:
            raise AuthFailed(
                "the hello is bound to another connection's nonce; sign this connection's "
                "challenge", code="replayed",
            )
    else:
        ts = hello.get("ts")
        if not isinstance(ts, int | float):
            raise AuthFailed("hello needs the challenge nonce or a ts (unix seconds)",
                             code="malformed")
        if abs(now - ts) > SKEW_SECONDS:
            raise AuthFailed(
                f"the hello's timestamp is {now - ts:+.0f} s off the hub's clock "
                f"(at most +-{SKEW_SECONDS:.0f} s)", code="stale",
            )
        _guard.check(sig, now)
    connector = str(hello.get("connector") or "cli")
    session = hello.get("session")
    identity = f"{connector}:{public_key}" + (f"/{session}" if session else "")
    return {"identity": identity, "public_key": public_key, "member_key": public_key}


@hookimpl(trylast=True)
def meshhub_authenticate_hello(hub: Any, hello: dict[str, Any], nonce: str) -> dict[str, Any]:
    """Ed25519-signed hellos; the fallback for every hello no other plugin claims."""
    return verify_hello(hello, nonce)
