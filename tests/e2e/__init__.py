"""End-to-end tests: the real reference registry behind token auth, the mirror, real clients.

Helpers live beside the tests so later suites (docker, containerd, podman) reuse them:
`support` (processes, ports, HTTP), `tokenissuer`, `registry`, `images`, `skopeo`,
`through` (skopeo pulling through a mirror, checked against what was pushed), `clients`,
`daemonproc` and `daemons` (Docker daemon, containerd, podman, skopeo configured as the
README says), `pulls` (one client pull checked three ways), `mirrorlog` (the mirror's
access log as records) and `clientsdoc` (docs/clients.md from a run).
"""
