"""Trims Atlassian's Jira Cloud platform REST API v3 OpenAPI document to the operations the
connector calls and every component schema they reference, for tests/it/jira.rs.

Usage: python3 trim_openapi.py swagger-v3.v3.json > openapi/jira-platform-v3.trimmed.json
"""
import json
import sys

OPERATIONS = [
    ("/rest/api/3/search/jql", "post"),
    ("/rest/api/3/issue/{issueIdOrKey}/comment", "get"),
    ("/rest/api/3/issue/{issueIdOrKey}/changelog", "get"),
    ("/rest/api/3/webhook", "post"),
    ("/rest/api/3/webhook", "delete"),
    ("/rest/api/3/webhook/refresh", "put"),
]


def refs(node, found):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            refs(value, found)
    elif isinstance(node, list):
        for value in node:
            refs(value, found)


def main():
    doc = json.load(open(sys.argv[1]))
    paths = {}
    for path, method in OPERATIONS:
        paths.setdefault(path, {})[method] = doc["paths"][path][method]
    schemas = doc["components"]["schemas"]
    wanted = set()
    refs(paths, wanted)
    done = set()
    while wanted - done:
        name = sorted(wanted - done)[0]
        done.add(name)
        refs(schemas[name], wanted)
    out = {
        "openapi": doc["openapi"],
        "info": doc["info"],
        "servers": doc.get("servers", []),
        "paths": paths,
        "components": {"schemas": {n: schemas[n] for n in sorted(done)}},
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


main()
