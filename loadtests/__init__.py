"""Load tests and the side-by-side benchmark.

The modules here are the commands (`python -m loadtests.bench`, `.report`, `.locust_run`, `.soak`,
`.grpc_load`, `.grpc_ceiling`, `.torchserve_compare`, `.trace_picture`, `.gpu_check`) and the files
run by path (`locustfile.py`, `wrk_post.lua`, `grpc_gen/`). What they are built from:

- `drive/`: the load: each model's request bodies, wrk, the gRPC generators, one benchmark point;
- `systems/`: what is measured: the gateway, TorchServe and the peers, started on free ports, the
  raw in-process limit, process memory and the gateway's `/metrics`;
- `reporting/`: the result records, the goals as data and their verdicts, the page and its plots.
"""
