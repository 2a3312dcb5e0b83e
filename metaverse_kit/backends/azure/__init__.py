"""The Azure backend: Schema Registry, Event Hubs and the Capture lake through the official SDKs.

``factory.create`` builds the three parts (``registry.py``, ``hub.py``, ``lake.py``), the same
roles and file names as the local backend. The Azure SDKs are imported on first use only.
"""
