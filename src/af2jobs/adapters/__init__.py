"""Adapters: implementations of the ports in af2jobs.ports (aws/ for AWS, local/ for one machine)."""
