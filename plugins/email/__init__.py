"""meshhub's email gateway (aiosmtpd in, aiosmtplib out); see docs/email.md."""
