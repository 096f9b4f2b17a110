"""PII: e-mail addresses, IP addresses, phone numbers and ID numbers replaced by placeholders.

E-mail and IP patterns are datatrove's (PIIFormatter, as used for FineWeb); phone and ID patterns are ours: Chinese
mobile numbers (1[3-9] + 9 digits, optional +86), international / North-American numbers with separators, Chinese
resident identity numbers (18 characters, checked with their ISO 7064 MOD 11-2 check digit, so a random 18-digit
number is left alone) and US social security numbers.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from datatrove.data import Document
from datatrove.pipeline.formatters.pii import PIIFormatter

from data_prep.steps.base import DocStep, StepParams, register

_EMAIL_RE = PIIFormatter().emails_replacer.regex
_IPV4_RE = re.compile(r"(?<!\d)(?<!\d\.)(?:(?:25[0-5]|2[0-4]\d|[01]?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d?\d)(?!\.?\d)")
_CN_MOBILE_RE = re.compile(r"(?<![\d+])(?:\+?86[- ]?)?1[3-9]\d(?:[- ]?\d{4}){2}(?!\d)")
_PHONE_RE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w])"
)
_CN_ID_RE = re.compile(r"(?<![\dA-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![\dA-Za-z])")
_SSN_RE = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def valid_cn_resident_id(number: str) -> bool:
    """GB 11643-1999 check digit: a real resident ID passes, 17 arbitrary digits plus one almost never do."""
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == number[17].upper()


@dataclass
class PiiParams(StepParams):
    emails: bool = field(default=True, metadata={"help": "Replace e-mail addresses."})
    ips: bool = field(default=True, metadata={"help": "Replace IPv4 addresses."})
    public_ips_only: bool = field(
        default=True, metadata={"help": "Leave private / loopback IPs (192.168.x.x, 127.0.0.1) alone, as FineWeb does."}
    )
    phones: bool = field(default=True, metadata={"help": "Replace phone numbers (Chinese mobile and international)."})
    ids: bool = field(default=True, metadata={"help": "Replace Chinese resident IDs (checksum-valid) and US SSNs."})
    email_placeholder: str = field(default="<EMAIL>", metadata={"help": "Replacement for an e-mail address."})
    ip_placeholder: str = field(default="<IP>", metadata={"help": "Replacement for an IP address."})
    phone_placeholder: str = field(default="<PHONE>", metadata={"help": "Replacement for a phone number."})
    id_placeholder: str = field(default="<ID_NUMBER>", metadata={"help": "Replacement for an ID number."})


@register
class Pii(DocStep):
    """Replace e-mails, IP addresses, phone numbers and ID numbers with placeholders (counted per kind)."""

    step_name = "pii"
    Params = PiiParams

    def _sub(self, pattern: re.Pattern, placeholder: str, kind: str, text: str, valid=None) -> str:
        def repl(m: re.Match) -> str:
            if valid is not None and not valid(m.group(0)):
                return m.group(0)
            self.stat_update(f"replaced_{kind}")
            return placeholder

        return pattern.sub(repl, text)

    def _public_ip(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return addr.is_global or not self.params.public_ips_only

    def process(self, doc: Document) -> str | None:
        p, text = self.params, doc.text
        # IDs before phones: an 18-digit ID contains what looks like a phone number.
        if p.emails:
            text = self._sub(_EMAIL_RE, p.email_placeholder, "email", text)
        if p.ids:
            text = self._sub(_CN_ID_RE, p.id_placeholder, "cn_resident_id", text, valid_cn_resident_id)
            text = self._sub(_SSN_RE, p.id_placeholder, "ssn", text)
        if p.ips:
            text = self._sub(_IPV4_RE, p.ip_placeholder, "ip", text, self._public_ip)
        if p.phones:
            text = self._sub(_CN_MOBILE_RE, p.phone_placeholder, "cn_mobile", text)
            text = self._sub(_PHONE_RE, p.phone_placeholder, "phone", text)
        doc.text = text
        return None
