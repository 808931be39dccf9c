"""A real script: parses the corpus' JSON, counts words, hashes, formats."""
import collections
import hashlib
import json
import re
import sys

with open("items.json") as f:
    doc = json.load(f)
scores = [it["score"] for it in doc["items"]]
print("items", len(doc["items"]), "mean score %.3f" % (sum(scores) / len(scores)))
with open("words.txt") as f:
    text = f.read()
counts = collections.Counter(re.findall(r"[a-z]+", text))
for word, n in counts.most_common(5):
    print("%-12s %d" % (word, n))
print("sha256", hashlib.sha256(text.encode()).hexdigest())
tags = sorted({t for it in doc["items"] for t in it["tags"]})
print("tags", len(tags), tags[:3])
print(json.dumps({"top": counts.most_common(2)}, sort_keys=True))
sys.exit(3 if len(tags) < 10 else 0)
