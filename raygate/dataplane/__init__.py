"""The HTTP data plane: HTTP/1.1 on the event loop's own protocols, llhttp parsing both legs.

- http.py: the client side (one protocol per connection; requests, answers, body streaming);
- upstream.py: connections to the upstream and their keep-alive pool;
- websocket.py: handshake checks; an authorized upgrade becomes raw byte piping;
- framing.py: bytes on the wire (status lines, header blocks, chunks);
- server.py: listeners, workers' sockets, graceful drain.

Every decision is the pipeline's (raygate.pipeline); this package only moves bytes.
"""
