"""The Yjs layer, pure (bytes in, bytes out; no I/O):

- :mod:`~crdt_sync.yjs.lib0`: the lib0 binary primitives (varUint, varString...);
- :mod:`~crdt_sync.yjs.updates`: Yjs v1 updates read from their bytes (state vectors, delete
  sets, the clocks an update carries and needs, the empty update and state vector);
- :mod:`~crdt_sync.yjs.integrate`: applying updates in any order to a document;
- :mod:`~crdt_sync.yjs.merge`: merging many updates in bounded groups;
- :mod:`~crdt_sync.yjs.awareness`: the awareness protocol's states;
- :mod:`~crdt_sync.yjs.y_websocket`: the y-websocket wire protocol, server side;
- :mod:`~crdt_sync.yjs.hocuspocus`: the Hocuspocus multiplexed wire protocol, server side.
"""
