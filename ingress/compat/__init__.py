"""Drop-in submit APIs: CM's HTTP JSON gateway, Kannel's sendsms and Twilio's Messages API, so a customer
keeps the client it has and only points it at the relay.

Each API translates its request into the native API's messages and takes the same durable path
(`ingress.compat.common.Intake`): the same validation, idempotency, tenant isolation and metrics, with
answers in the format, codes and statuses its clients already handle.
"""
