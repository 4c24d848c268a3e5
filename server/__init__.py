"""The crdt-sync relay server (installed as ``crdt_sync.server``)."""
