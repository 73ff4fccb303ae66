"""The commands people run: ``tegadb-client``, ``tegadb-tool``, and the
output formats they share with ovsdb-client (table, list, html, csv, json).

This layer sits on top: it uses the client library to talk to a server and
the server layer's storage to work on database files offline.  Nothing
imports it.
"""
