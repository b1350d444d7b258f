"""D-Bus plumbing shared by the service and the client: calls with typed errors and
timeouts, match rules, name owners (``calls``), NameOwnerChanged read one way
(``owner``), and the wire format of our hot path (``marshal``, ``writer``,
``outbox``)."""
