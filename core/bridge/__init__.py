"""Machinery every chat connector shares (Telegram, Slack, email...), so connectors stay thin.

- :mod:`.pairing`: one-time pairing codes, paired identities, linked group chats and current
  targets (a built-in plugin keeping them in record collections, with the ``pair_*`` actions);
- :mod:`.chat`: what a person typing in a chat means (commands, targets, threads, groups,
  buttons), from a platform-neutral :class:`~.chat.ChatEvent`;
- :mod:`.loops`: loop prevention (origins, own-message guard);
- :mod:`.markdown`: Markdown to chat HTML, escaped, and splitting at a platform's length limit;
- :mod:`.retry`: retries with backoff honouring ``retry_after``, rate limits, and work repeated
  every so often (the lease sweep, a connector's retries).

Nothing here imports a platform SDK.
"""
