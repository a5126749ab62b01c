"""Kubernetes/KubeEdge deployment: manifests rendered from one checked values file
(``collab deploy render``; the walkthrough is docs/deploy.md)."""
