"""What the MTA in front of the gateway says about a mail's sender: the Authentication-Results
header (RFC 8601) it put on top, judged by SPF, DKIM and DMARC with domain alignment. Pure
functions, like :mod:`.mime`.

Only the topmost header from the trusted authserv-id counts: the MTA adds its own above what
the mail brought, and anything below may have been written by the sender.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import authres


@dataclass
class AuthVerdict:
    passed: bool
    reason: str  # what a person reads: "dmarc=pass", "dmarc=fail for example.com", ...



def _aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment without the public suffix list: the same domain, or one a subdomain of
    the other, the shorter having at least two labels (so "com" aligns with nothing)."""
    a, b = domain.lower().strip(". "), from_domain.lower().strip(". ")
    if not a or not b:
        return False
    shorter, longer = sorted((a, b), key=len)
    return "." in shorter and (a == b or longer.endswith("." + shorter))


def _property(result: Any, type_: str, name: str) -> str:
    for prop in result.properties:
        if prop.type.lower() == type_ and prop.name.lower() == name:
            return str(prop.value or "")
    return ""


def _domain_of(value: str) -> str:
    return value.rpartition("@")[2]


def _our_header(message_headers: list[tuple[str, str]], authserv_id: str
                ) -> authres.AuthenticationResultsHeader | AuthVerdict:
    """The topmost Authentication-Results from ``authserv_id``, or the verdict when there is
    none or it does not parse. Headers below it may come from the sender."""
    for name, value in message_headers:
        if name.lower() != "authentication-results":
            continue
        value = re.sub(r"\r?\n", "", value)
        try:
            header = authres.AuthenticationResultsHeader.parse_value(value)
        except (authres.AuthResError, ValueError, IndexError, TypeError, AttributeError):
            if [w.lower() for w in value.split(";", 1)[0].split()[:1]] == [authserv_id.lower()]:
                return AuthVerdict(False, f"the Authentication-Results from {authserv_id} do "
                                          "not parse")
            continue
        if str(header.authserv_id).lower() == authserv_id.lower():
            return header
    return AuthVerdict(False, f"no Authentication-Results from {authserv_id}")


def auth_verdict(message_headers: list[tuple[str, str]], authserv_id: str, from_domain: str
                 ) -> AuthVerdict:
    """Whether our MTA vouched for the From domain: dmarc=pass, or without a DMARC result
    (none counts as none) a dkim or spf pass aligned with ``from_domain``."""
    header = _our_header(message_headers, authserv_id)
    if isinstance(header, AuthVerdict):
        return header
    results: dict[str, list[Any]] = {"dmarc": [], "dkim": [], "spf": []}
    for result in header.results:
        results.setdefault(str(result.method).lower(), []).append(result)
    dmarc = [r for r in results["dmarc"] if str(r.result).lower() != "none"]
    if dmarc:
        return _dmarc_verdict(dmarc, from_domain)
    for dkim in results["dkim"]:
        signer = _property(dkim, "header", "d") or _domain_of(_property(dkim, "header", "i"))
        if str(dkim.result).lower() == "pass" and _aligned(signer, from_domain):
            return AuthVerdict(True, f"dkim=pass for {signer}")
    for spf in results["spf"]:
        sender = _domain_of(_property(spf, "smtp", "mailfrom"))
        if str(spf.result).lower() == "pass" and _aligned(sender, from_domain):
            return AuthVerdict(True, f"spf=pass for {sender}")
    return AuthVerdict(False, f"no dmarc, aligned dkim or spf pass for {from_domain}")


def _dmarc_verdict(dmarc: list[Any], from_domain: str) -> AuthVerdict:
    """dmarc=pass counts only for the From domain it was checked for (when it says which)."""
    for result in dmarc:
        checked = _property(result, "header", "from")
        if str(result.result).lower() == "pass":
            if not checked or checked.lower() == from_domain.lower():
                return AuthVerdict(True, "dmarc=pass")
            return AuthVerdict(False, f"dmarc=pass for {checked}, not {from_domain}")
    return AuthVerdict(False, f"dmarc={str(dmarc[0].result).lower()} for {from_domain}")
