"""Loopback servers for tests: a DNS server (dns_server.py) and an HTTP server (http_server.py)."""
