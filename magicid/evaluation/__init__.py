"""The paper's evaluation protocol (Tables 1-4) as code: suites of cases, judges, metrics and the runner behind
`python -m magicid evaluate`."""
