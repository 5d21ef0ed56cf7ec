"""A relay on this machine whose faults can be switched: the one harness of the drill, the tests and the
benchmarks.

- `processes`: free ports and child processes that are always stopped, with their own children;
- `simulators`: simulated platforms started on this machine and the client of their admin API (faults,
  counters, received references);
- `deployment`: `relay up` on free ports, what it runs and where its simulators answer;
- `jobs`: jobs published straight to the broker as the ingress does, and what the workers made of them;
- `kannel`: real Kannels (bearerbox, smsbox, fakesmsc) as platforms;
- `cleanup`: deleting a topology's exchanges and queues.
"""
