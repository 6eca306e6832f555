"""Client of Microsoft Intune's third-party CA API (see intune-api.md).

:mod:`.client` holds the API operations (challenge validation, notifications, revocation requests) and
:mod:`.messages` their bodies; :mod:`.transport` does the I/O (retried POSTs over one pooled
``requests.Session``) with tokens from :mod:`.auth` and service URLs from :mod:`.discovery`.
:mod:`.check` is what ``scep-server intune check`` and readiness verify, :mod:`.health` keeps readiness'
last-known answers from Entra ID and Graph, :mod:`.credentials` says when the app's credential expires.
:mod:`.contract` is the vocabulary the client shares with the emulator; importing this package imports
none of the others, so the emulator does not load MSAL, requests or the configuration.
"""
