"""Embedded Kubernetes for tests and the demo: a real control plane built from the official Go modules
(`controlplane`) and a Python node agent that plays the kubelet for the project's images (`nodeagent`)."""
