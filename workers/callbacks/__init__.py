"""The callback worker: POSTs each status change to the customer's endpoint, signed, at least once.

A pool of its own (`relay callbacks`), apart from the site workers, so a slow or dead customer endpoint
holds only its own callbacks: never a delivery, never a submit.
"""
