[.items[] | select(.score > 50) | {id, name, n: (.tags | length)}] | group_by(.n) | map({n: .[0].n, count: length})
