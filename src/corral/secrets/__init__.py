"""Secrets (law 5): encrypted in the state store, referenced by releases, injected at launch.

`crypto` holds the key (a 0600 file apart from the state) and the cipher; `store` keeps
versions in the state store; `resolve` turns a spec's references into a release's recorded
versions (plan time) and a release's versions into values (launch time only).
"""
