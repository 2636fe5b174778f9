"""Driving load: the models' request bodies, wrk, the gRPC generators, one benchmark point."""
