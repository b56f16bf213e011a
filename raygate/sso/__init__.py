"""Single sign-on with an OpenID Connect provider: people, not service accounts.

- `provider`: the OAuth 2.0 / OIDC client calls (discovery, authorization code + PKCE, refresh,
  device authorization, end session), built on authlib's protocol helpers over aiohttp;
- `store`: server-side browser sessions and pending sign-ins in the state directory (SQLite);
- `flow`: the transport-independent browser sign-in step of the request path;
- `cli_tokens`: the CLI's own token file (`raygate login`, `raygate env`).
"""
