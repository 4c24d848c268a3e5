"""The crdt-sync client runtime (installed as ``crdt_sync.client``)."""
