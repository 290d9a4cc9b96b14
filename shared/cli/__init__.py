"""The `jobmesh` command-line client: `main` parses `jobmesh <area> <verb>`, `commands` runs
each verb over `shared.client.Client`, `render` prints text or proto JSON."""
